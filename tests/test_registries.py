"""Each extension point is one table, and the config side names the same schemas: a new option
is one entry and one YAML file (docs/extending.md; tests/test_extending.py follows it)."""

import dataclasses
import typing

from omegaconf import OmegaConf

from helpers import options
from normlab.config.schema import OPTION_SCHEMAS, RegularizerConfig
from normlab.lit.regularizers import PLACES, REGULARIZERS
from normlab.models.activations import ACTIVATIONS
from normlab.models.norms import NORMS
from normlab.paths import CONFIG_DIR


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


def test_every_data_set_name_has_an_entry_and_a_yaml():
    from normlab.config.schema import DatasetName
    from normlab.data.datasets import DATASETS

    assert set(DATASETS) == {name.value for name in DatasetName}
    named = {OmegaConf.load(path).name for path in (CONFIG_DIR / "data").glob("*.yaml")}
    assert named == set(DATASETS)


def test_label_smoothing_is_torchs_label_smoothed_cross_entropy_per_member():
    """The loss-place term plus the plain cross-entropy equals F.cross_entropy with
    label_smoothing=e, each member with its own e (one without it: e = 0)."""
    import torch
    import torch.nn.functional as F

    from normlab.lit.losses import member_cross_entropy
    from normlab.lit.regularizers import LabelSmoothing

    torch.manual_seed(0)
    logits, y = torch.randn(3, 16, 10) * 4, torch.randint(0, 10, (3, 16))
    settings = [OmegaConf.create({"value": 0.1}), None, OmegaConf.create({"value": 0.3})]
    smoothing = LabelSmoothing(settings, networks=None)
    got = member_cross_entropy(logits, y) + smoothing.loss(None, logits, y)
    for m, e in enumerate((0.1, 0.0, 0.3)):
        expected = F.cross_entropy(logits[m], y[m], label_smoothing=e)
        torch.testing.assert_close(got[m], expected, rtol=1e-6, atol=1e-6)
