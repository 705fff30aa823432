"""Dataclass schemas for every config group.

Registered in Hydra's ConfigStore as the first entry of `conf/train.yaml`'s defaults list,
so OmegaConf rejects a wrong type or an unknown key at composition time, naming the key; a key
added with Hydra's `+` gets past OmegaConf and is refused by `normlab.config.keys`.
Numeric ranges live in each field's metadata (`ge`, `gt`, `lt`, `le`) and are enforced by
`normlab.config.validate` before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value must satisfy `bounds` (ge/gt/le/lt)."""
    return field(default=default, metadata=bounds)


class DatasetName(str, Enum):
    fashion_mnist = "fashion_mnist"
    mnist = "mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    digits = "digits"
    mnist1d = "mnist1d"
    synthetic = "synthetic"
    custom = "custom"  # a user's own function, data._target_ (normlab.data.custom)


class Preprocess(str, Enum):
    none = "none"
    scale = "scale"
    standardize = "standardize"
    whiten = "whiten"


class Placement(str, Enum):
    before_activation = "before_activation"
    after_activation = "after_activation"


class Interval(str, Enum):
    step = "step"
    epoch = "epoch"


class ClipAlgorithm(str, Enum):
    norm = "norm"
    value = "value"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class DataConfig:
    """Where the examples come from and how they are split, scaled and batched."""

    name: DatasetName = MISSING
    # data=custom: the function returning your data (normlab.data.custom), and its arguments
    _target_: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    root: str | None = None  # folder holding the raw files; null = the dataset's default places
    batch_size: int = bounded(60, ge=1)  # global training batch (split across DDP ranks)
    eval_batch_size: int = bounded(1000, ge=1)
    val_size: int = bounded(5000, ge=1)  # held out from the training set with split_seed
    train_size: int | None = bounded(None, ge=1)  # subsample the training set (quick runs)
    test_size: int | None = bounded(None, ge=1)  # subsample the test set (quick runs)
    split_seed: int = 0  # fixed across run seeds: every seed sees the same split
    preprocess: Preprocess = Preprocess.scale
    per_feature: bool = False  # standardize per input feature instead of one global mean/std
    zca_epsilon: float = bounded(0.1, gt=0)  # added to eigenvalues before ZCA whitening
    num_samples: int | None = bounded(None, ge=10)  # generated sets: synthetic, mnist1d
    num_features: int | None = bounded(None, ge=1)  # synthetic only
    # synthetic: the classes generated; custom: the label count (null: from the data)
    num_classes: int | None = bounded(None, ge=2)
    # mnist, cifar10, cifar100: fetch the official files (checksummed) when missing
    download: bool = True
    mirror: str | None = None  # mnist, cifar10, cifar100: a mirror URL tried before the official
    fallback: DatasetName | None = (
        None  # used (with a warning) when this dataset's files are absent
    )


# the DataConfig keys only some data sets read, and which (the others would ignore them, so a
# value set on another data set is refused: normlab.config.validate.check_data)
DATA_KEYS_READ_BY: dict[str, tuple[str, ...]] = {
    "_target_": ("custom",),
    "kwargs": ("custom",),
    "num_classes": ("synthetic", "custom"),
    "num_samples": ("synthetic", "mnist1d"),
    "num_features": ("synthetic",),
    "root": ("fashion_mnist", "mnist", "cifar10", "cifar100"),
    "mirror": ("mnist", "cifar10", "cifar100"),
}


@dataclass
class ModelConfig:
    """normlab's mlp and cnn (`model` holds any network's `_target_` and arguments; a network
    class with a `config_schema` dataclass, like these, gets its keys typed and bounded)."""

    _target_: str = MISSING  # the network class, built by normlab.models.build
    depth: int = bounded(3, ge=1)  # hidden layers (mlp) or conv blocks (cnn)
    width: int = bounded(100, ge=1)  # hidden units (mlp) or channels of the first block (cnn)
    input_norm: bool = False  # batch norm on the raw input ("BN as the first layer")


@dataclass
class ResNetConfig:
    """The pre-activation ResNet of `model=resnet_small` (normlab.models.resnet)."""

    _target_: str = MISSING
    width: int = bounded(16, ge=1)  # channels of the first stage (then 2x, 4x)
    blocks_per_stage: int = bounded(1, ge=1)  # residual blocks in each of the three stages


@dataclass
class VGGConfig:
    """The VGG-style conv net of `model=vgg` (normlab.models.vgg)."""

    _target_: str = MISSING
    # conv3x3 blocks in each stage; every stage ends in a 2x2 max-pool ([2,2,3,3,3]: VGG-16)
    convs_per_stage: list[int] = field(default_factory=lambda: [2, 2, 3, 3, 3])
    width: int = bounded(64, ge=1)  # channels of the first stage (then 2x, 4x, 8x, 8x)
    input_norm: bool = False  # batch norm on the raw input


@dataclass
class NormConfig:
    """What every option of the `norm` group has; each option's schema extends it with its own
    settings (Hydra's schema per option: `conf/norm/<option>.yaml` names it in its defaults).
    The options themselves are the table `normlab.models.norms.NORMS`."""

    name: str = MISSING  # a key of NORMS, or your own option's label
    # your own option: the NormOption it is (module.attribute; docs/extending.md), else null
    _target_: str | None = None
    placement: Placement = Placement.before_activation
    linear_bias: bool | None = None  # null: dropped exactly when a batch-statistics norm follows
    sync: bool = True  # multi-device runs: all-reduce batch statistics across ranks


@dataclass
class BatchNormConfig(NormConfig):
    """norm=batch: per-feature mini-batch statistics, running averages at eval time."""

    momentum: float = bounded(0.1, ge=0, le=1)  # running-stat update (PyTorch 0.1 = Keras 0.99)
    eps: float = bounded(1e-5, gt=0)
    affine: bool = True  # learned gamma and beta
    ghost_batches: int = bounded(1, ge=1)  # statistics per 1/G slice of a batch


@dataclass
class NoisyBatchNormConfig(NormConfig):
    """norm=noisy_batch (models/noisy_batchnorm.py): batch norm, then per unit and step a
    random scale and shift: scale mean ~ U(1 -/+ this), scale std ~ U(0, this), shift mean
    ~ U(-/+ this), shift std ~ U(0, this)."""

    momentum: float = bounded(0.1, ge=0, le=1)
    eps: float = bounded(1e-5, gt=0)
    affine: bool = True
    noise_scale_mean: float = bounded(0.5, ge=0)
    noise_scale_std: float = bounded(0.5, ge=0)
    noise_shift_mean: float = bounded(0.5, ge=0)
    noise_shift_std: float = bounded(0.5, ge=0)


@dataclass
class LayerNormConfig(NormConfig):
    """norm=layer: statistics over the features of one example."""

    eps: float = bounded(1e-5, gt=0)
    affine: bool = True


@dataclass
class GroupNormConfig(NormConfig):
    """norm=group: statistics over groups of channels of one example."""

    num_groups: int = bounded(1, ge=1)  # must divide the width / channels
    eps: float = bounded(1e-5, gt=0)
    affine: bool = True


@dataclass
class ActivationConfig:
    """What every option of the `activation` group has (each option's schema extends it); the
    options are the table `normlab.models.activations.ACTIVATIONS`."""

    name: str = MISSING  # a key of ACTIVATIONS, or your own option's label
    _target_: str | None = None  # your own option: the ActivationOption it is, else null


@dataclass
class LeakyReLUConfig(ActivationConfig):
    negative_slope: float = bounded(0.01, ge=0)


@dataclass
class ELUConfig(ActivationConfig):
    alpha: float = bounded(1.0, gt=0)


# each built-in option's schema, stored in Hydra's ConfigStore as schema/<group>/<option> (a
# group of its own, so `norm=` lists only real options)
# (torch-free here; the tables in normlab.models name the same classes, tested)
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "norm": {
        "batch": BatchNormConfig,
        "noisy_batch": NoisyBatchNormConfig,
        "layer": LayerNormConfig,
        "group": GroupNormConfig,
        "none": NormConfig,
    },
    "activation": {
        "sigmoid": ActivationConfig,
        "tanh": ActivationConfig,
        "relu": ActivationConfig,
        "leaky_relu": LeakyReLUConfig,
        "elu": ELUConfig,
        "gelu": ActivationConfig,
        "identity": ActivationConfig,
    },
}


@dataclass
class InitConfig:
    """Weight and bias initializers: `_partial_` callables on a tensor, or null (PyTorch's)."""

    weight: Any = None
    bias: Any = None


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: a `_partial_` LR scheduler (null = constant) and its cadence."""

    schedule: Any = None
    interval: Interval = Interval.epoch
    frequency: int = bounded(1, ge=1)


@dataclass
class L2Config:
    """Penalty (strength / 2m) * sum ||W||^2 added to the loss; m = batch size."""

    strength: float = bounded(0.1, ge=0)


@dataclass
class L1Config:
    """Penalty (strength / m) * sum |W| added to the loss; m = batch size."""

    strength: float = bounded(0.01, ge=0)


@dataclass
class WeightDecayConfig:
    """Decoupled weight decay: w <- w - lr * value * w before each optimizer step."""

    value: float = bounded(1e-4, ge=0)
    decay_norm_and_bias: bool = False  # biases and norm gains/shifts are not decayed by default


@dataclass
class DropoutConfig:
    """Inverted dropout after every hidden activation (p = drop probability)."""

    p: float = bounded(0.2, ge=0, lt=1)


@dataclass
class DropConnectConfig:
    """DropConnect on hidden weights (p = drop probability), inverted scaling."""

    p: float = bounded(0.2, ge=0, lt=1)


@dataclass
class LabelSmoothingConfig:
    value: float = bounded(0.1, ge=0, lt=1)


@dataclass
class GradClipConfig:
    algorithm: ClipAlgorithm = ClipAlgorithm.norm
    value: float = bounded(1.0, gt=0)


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val/acc"
    mode: str = "max"
    patience: int = bounded(5, ge=1)  # validation checks without improvement
    min_delta: float = bounded(0.0, ge=0)


@dataclass
class AugmentConfig:
    """Random shifts (up to max_shift pixels) and horizontal flips of training images."""

    max_shift: int = bounded(2, ge=0)
    hflip: bool = True


@dataclass
class RegularizerConfig:
    """Any subset of regularizers; an option is on when its entry is present. The options are
    the table normlab.lit.regularizers.REGULARIZERS (each class names its schema here)."""

    l2: L2Config | None = None
    l1: L1Config | None = None
    weight_decay: WeightDecayConfig | None = None
    dropout: DropoutConfig | None = None
    dropconnect: DropConnectConfig | None = None
    label_smoothing: LabelSmoothingConfig | None = None
    grad_clip: GradClipConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None
    augment: AugmentConfig | None = None
    # your own, by name: {_target_: a normlab.lit.regularizers.Regularizer subclass, its
    # settings} (docs/extending.md); name=null turns one off
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    """Keyword arguments of `pytorch_lightning.Trainer`, one to one."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = bounded(1, ge=1)
    precision: Any = "32-true"
    max_steps: int = bounded(3000, ge=-1)
    max_epochs: int = bounded(-1, ge=-1)
    val_check_interval: int = bounded(500, ge=1)  # validation every N optimizer steps
    check_val_every_n_epoch: int | None = None  # null: count val_check_interval across epochs
    log_every_n_steps: int = bounded(50, ge=1)
    num_sanity_val_steps: int = 0
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    enable_progress_bar: bool = False
    enable_model_summary: bool = False
    deterministic: bool = False
    benchmark: bool | None = None
    # not a Trainer argument (normlab's DDP strategy takes it): how long a rank waits in a
    # collective for a peer before failing. A dead rank makes the others wait this long on
    # NCCL (torch's default: 30 min), so a sweep moves on after 5 min; raise it for steps or
    # rank-0-only work (a checkpoint write) that can take longer
    process_group_timeout_s: float = bounded(300.0, gt=0)


@dataclass
class WandbConfig:
    project: str = "normlab"
    entity: str | None = None
    # null: $WANDB_MODE when set, else offline (no login, no network; `wandb sync` later);
    # a value here wins over $WANDB_MODE
    mode: WandbMode | None = None
    group: str | None = None  # null: the experiment name
    tags: list[str] = field(default_factory=list)  # beside `tags` and the sweep key
    job_type: str = "train"
    log_model: bool = False


@dataclass
class LoggerConfig:
    csv: bool = True  # metrics.csv in the run folder
    wandb: WandbConfig | None = None
    # more Lightning loggers by name, each {_target_: class, its arguments} (one per member of
    # a stack); a `save_dir` argument left out gets the run folder; name=null drops one
    extra: dict[str, Any] = field(default_factory=dict)


class ShiftKind(str, Enum):
    brightness = "brightness"
    contrast = "contrast"
    noise = "noise"


@dataclass
class ShiftConfig:
    """A shifted copy of the test set: does a model trained with batch statistics generalize?"""

    kind: ShiftKind = ShiftKind.brightness
    # brightness: add amount * (test-set std); contrast: scale each example's deviations from
    # its own mean by amount (1 = unchanged); noise: add Gaussian noise of std amount * (test std)
    amount: float = bounded(1.0, ge=0)


@dataclass
class InstrumentsConfig:
    """Probe-batch statistics of activations, gradients and norm layers (callbacks=instruments)."""

    every_n_steps: int = bounded(100, ge=1)  # record at optimizer steps 0, N, 2N, ...
    probe_size: int = bounded(500, ge=2)  # the first examples of the validation split
    typical_unit: int = bounded(0, ge=0)  # the unit (channel) of the act/<layer>/unit/* stats
    saturation_margin: float = bounded(0.05, gt=0, lt=0.5)  # output this close to an asymptote
    histograms: bool = True  # pre-activation histograms (W&B only)
    shift: ShiftConfig | None = field(default_factory=ShiftConfig)  # null: no shifted test


@dataclass
class GradcheckConfig:
    """`python -m normlab.gradcheck`: back-propagation against centred finite differences."""

    tolerance: float = bounded(1e-4, gt=0)  # worst relative error allowed in any tensor
    epsilon: float = bounded(1e-5, gt=0)  # finite-difference step (float64)
    batch_size: int = bounded(8, ge=2)  # first training examples (batch norm needs 2)
    max_entries: int | None = bounded(32, ge=1)  # random entries checked per tensor; null: all


@dataclass
class LandscapeConfig:
    """Santurkar et al. 2018's measures on a fixed probe batch (callbacks/landscape.py)."""

    every_n_steps: int = bounded(100, ge=1)  # record at optimizer steps 0, N, 2N, ...
    probe_size: int = bounded(500, ge=2)  # the first examples of the validation split
    # the step sizes eta of L(w - eta g), as multiples of the member's current learning rate
    lr_multipliers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    ics: bool = True  # internal covariate shift (definition 2.1) per layer: ics/<layer>/*


@dataclass
class CallbacksConfig:
    checkpoint: bool = True  # last.ckpt in <run>/checkpoints (stores the config)
    instruments: InstrumentsConfig | None = None
    landscape: LandscapeConfig | None = None  # callbacks=landscape
    # more Lightning callbacks by name, each {_target_: class, its arguments}; name=null drops one
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    # any network's `_target_` and arguments (normlab.models.build checks them against it)
    model: Any = MISSING
    # an option's own schema types it (OPTION_SCHEMAS; a user's option: its entry's `config`)
    norm: Any = MISSING
    activation: Any = MISSING
    init: InitConfig = field(default_factory=InitConfig)
    optimizer: Any = MISSING
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    gradcheck: GradcheckConfig = field(default_factory=GradcheckConfig)  # gradcheck command only
    name: str = "default"  # experiment name: W&B group and sweep folder
    tags: list[str] = field(default_factory=list)
    seed: int = bounded(0, ge=0)  # 0 is a seed like any other
    seed_init: int | None = bounded(None, ge=0)  # null: derived from seed
    seed_data: int | None = bounded(None, ge=0)  # null: derived from seed (batch order, dropout)
    threads: int | None = bounded(None, ge=1)  # null: cores / parallel jobs
    compile: bool = False  # torch.compile the network
    search: dict[str, Any] = field(default_factory=dict)  # variables sampled by hparams_search


def register_schemas() -> None:
    """Store the schemas so `conf/train.yaml` and each option's YAML can name them in their
    defaults lists."""
    store = ConfigStore.instance()
    store.store(name="normlab_schema", node=TrainConfig)
    for group, options in OPTION_SCHEMAS.items():
        for option, schema in options.items():
            store.store(group=f"schema/{group}", name=option, node=schema)
