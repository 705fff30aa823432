"""Each extension point is one table, and the config side names the same schemas: a new option
is one entry and one YAML file (docs/extending.md; tests/test_extending.py follows it)."""

import dataclasses
import typing

from helpers import options
from normlab.config.schema import OPTION_SCHEMAS, RegularizerConfig
from normlab.lit.regularizers import PLACES, REGULARIZERS
from normlab.models.activations import ACTIVATIONS
from normlab.models.norms import NORMS


def test_the_config_schemas_are_the_tables_schemas():
    assert {name: entry.config for name, entry in NORMS.items()} == OPTION_SCHEMAS["norm"]
    assert {name: entry.config for name, entry in ACTIVATIONS.items()} == OPTION_SCHEMAS[
        "activation"
    ]


def test_every_table_entry_has_a_yaml_and_every_yaml_an_entry():
    # group4 is a YAML variant of group (4 groups), not a new entry
    assert set(options("norm")) - {"group4"} == set(NORMS)
    assert set(options("activation")) == set(ACTIVATIONS)


def test_each_regularizer_is_typed_by_its_field_of_the_regularizer_schema():
    hints = typing.get_type_hints(RegularizerConfig)
    fields = {f.name for f in dataclasses.fields(RegularizerConfig)} - {"extra"}
    assert fields == set(REGULARIZERS)
    for name, regularizer in REGULARIZERS.items():
        assert hints[name] == regularizer.config | None, name
        assert regularizer.acts_on in PLACES, name
        declared = {f.name for f in dataclasses.fields(regularizer.config)}
        assert set(regularizer.member_wise) <= declared, name
