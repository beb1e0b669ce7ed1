"""The optimizer catalogue: one declarative record per optimizer family, in every dialect that stores it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

Translation = Literal["copy", "neg_lr", "minus_eps", "refuse"]
Exactness = Literal["exact", "rounding", "approximate"]


@dataclass(frozen=True)
class Slot:
    """One per-weight slot: its canonical (Keras 3) name and the names other dialects give it.

    `tf1` is the TF1 slot-variable suffix (`<var>/Adam_1`); `keras2` the tf_keras names (new optimizers and
    `optimizer_v2` legacy ones); `lists` the optimizer attributes (Keras 3, tf_keras) that track one per
    weight in the object graph (`_momentums`); `when` the config flag that creates it (None: always);
    `factored` marks Adafactor's reduced-shape moments.
    """

    name: str
    tf1: str | None = None
    keras2: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    when: str | None = None
    factored: Literal["rows", "cols"] | None = None

    def shape_for(self, weight: tuple[int, ...]) -> tuple[int, ...]:
        """The slot's shape for a weight of shape `weight` (Adafactor factors the second moment)."""
        if self.factored is None or len(weight) < 2:
            return weight if self.factored is None else ()
        return weight[:-1] if self.factored == "rows" else weight[:-2] + weight[-1:]


@dataclass(frozen=True)
class TrainingOp:
    """A TF1 training op: its canonical slots at data inputs 1..n, and where each hyper-parameter enters.

    `sparse_hyper` gives the positions of the `Sparse*` / `ResourceSparse*` variants where they differ (the
    indices input shifts what follows the gradient).
    """

    op: str
    slots: tuple[str, ...]
    hyper: Mapping[str, int]
    sparse_hyper: Mapping[str, int] | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)
    grad: int = 0  # the gradient's input position (the same in the sparse variants: indices follow it)

    def hyper_inputs(self, sparse: bool) -> Mapping[str, int]:
        return self.sparse_hyper if sparse and self.sparse_hyper is not None else self.hyper


@dataclass(frozen=True)
class SlotTranslation:
    """How one source slot of a family becomes Keras 3 state, and how exact that is."""

    slot: str
    how: Translation
    exactness: Exactness
    note: str = ""
    exact_if: str | None = None  # a source hyper-parameter that, when > 0, makes an approximate rule exact
    # (epsilon, floor, bound): an approximate rule is the same up to rounding while the source's epsilon over the
    # square root of its floor hyper-parameter (accumulators only grow from it) stays within `bound`
    rounding_while: tuple[str, str, float] | None = None


@dataclass(frozen=True)
class Family:
    """One optimizer family. `keras3` is the Keras 3 class that continues it (None: no Keras 3 optimizer)."""

    name: str
    slots: tuple[Slot, ...]
    keras3: str | None
    keras2_classes: tuple[str, ...] = ()
    tf1_ops: tuple[TrainingOp, ...] = ()
    tf1_class: str | None = None
    keras3_hyper: Mapping[str, Any] = field(default_factory=dict)
    keras3_groups: tuple[tuple[str, ...], ...] = ()
    translations: Mapping[str, Mapping[str, SlotTranslation]] = field(default_factory=dict)
    display: str | None = None
    # Keras <= 2.2 saved optimizer weights by position only (`training/Adam/Variable_3`): the canonical slots,
    # in the order its `get_updates` created them, one block per slot.
    keras2_positional: tuple[str, ...] = ()

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)

    def defaults(self, framework: str) -> Mapping[str, Any]:
        """Hyper-parameter defaults of this family's optimizer class in `framework` (`tf1`, `tf_keras`, `keras3`);
        None values are required arguments without a default."""
        if framework == "keras3":
            return self.keras3_hyper
        return FRAMEWORK_DEFAULTS.get(self.name, {}).get(framework, {})

    def slots_for(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The canonical slots this family keeps per weight under `config` (Keras 3 semantics)."""
        return tuple(s.name for s in self.slots if s.when is None or _truthy(config.get(s.when)))

    def groups_for(self, config: Mapping[str, Any] | None) -> list[tuple[tuple[str, ...], ...]]:
        """The Keras 3 slot layouts (groups created one after another, each interleaved per weight) under
        `config`; every layout the optional slots allow when the config is unknown."""
        groups = self.keras3_groups or tuple((s.name,) for s in self.slots)
        optional = [s.name for s in self.slots if s.when is not None]
        if config is not None:
            chosen = [frozenset(self.slots_for(config))]
        else:
            chosen = [
                frozenset(s.name for s in self.slots if s.when is None or s.name in pick) for pick in _subsets(optional)
            ]
        out = []
        for keep in chosen:
            layout = tuple(tuple(n for n in g if n in keep) for g in groups)
            out.append(tuple(g for g in layout if g))
        return out


def _subsets(items: list[str]) -> list[frozenset[str]]:
    out = [frozenset[str]()]
    for item in items:
        out += [s | {item} for s in out]
    return out


def _truthy(value: Any) -> bool:
    return bool(value) and not (isinstance(value, (int, float)) and value <= 0)


def _ops(
    op: str,
    slots: tuple[str, ...],
    hyper: dict[str, int],
    sparse: dict[str, int] | None = None,
    grad: int | None = None,
    **flags: Any,
) -> TrainingOp:
    """A training op record; the gradient follows the last hyper-parameter unless `grad` says otherwise."""
    return TrainingOp(
        op,
        slots,
        MappingProxyType(hyper),
        None if sparse is None else MappingProxyType(sparse),
        MappingProxyType(flags),
        max(hyper.values()) + 1 if grad is None else grad,
    )


_COPY = SlotTranslation("", "copy", "exact", "same update rule")


def _tr(**by_slot: SlotTranslation) -> Mapping[str, SlotTranslation]:
    return MappingProxyType({k: replace(v, slot=k) for k, v in by_slot.items()})


ADAM = Family(
    "Adam",
    (
        Slot("momentum", tf1="Adam", keras2=("m",), lists=("_momentums",)),
        Slot("velocity", tf1="Adam_1", keras2=("v",), lists=("_velocities",)),
        Slot("velocity_hat", keras2=("vhat",), lists=("_velocity_hats",), when="amsgrad"),
    ),
    keras3="Adam",
    keras2_positional=("momentum", "velocity", "velocity_hat"),
    keras3_groups=(("momentum", "velocity"), ("velocity_hat",)),
    keras2_classes=("Adam",),
    tf1_ops=(
        _ops(
            "ApplyAdam",
            ("momentum", "velocity"),
            {"learning_rate": 5, "beta_1": 6, "beta_2": 7, "epsilon": 8},
            amsgrad=False,
        ),
    ),
    tf1_class="AdamOptimizer",
    keras3_hyper=MappingProxyType(
        {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}
    ),
    translations=MappingProxyType(
        {
            "tf1": _tr(
                momentum=SlotTranslation("", "copy", "exact", "same update rule (epsilon-hat outside the sqrt)"),
                velocity=_COPY,
            ),
            "keras2": _tr(
                momentum=_COPY, velocity=_COPY, velocity_hat=SlotTranslation("", "copy", "exact", "AMSGrad maximum")
            ),
        }
    ),
)
ADAMW = Family(
    "AdamW",
    ADAM.slots,
    keras3="AdamW",
    keras2_classes=("AdamW",),
    keras3_groups=ADAM.keras3_groups,
    keras3_hyper=MappingProxyType({**ADAM.keras3_hyper, "weight_decay": 0.004}),
    translations=MappingProxyType(
        {
            "keras2": _tr(
                momentum=SlotTranslation(
                    "", "copy", "exact", "same rule: var -= var*weight_decay*lr on every trainable variable, then Adam"
                ),
                velocity=_COPY,
                velocity_hat=SlotTranslation("", "copy", "exact", "AMSGrad maximum"),
            ),
        }
    ),
)
ADAMAX = Family(
    "Adamax",
    (
        Slot("momentum", tf1="AdaMax", keras2=("m",), lists=("_m",)),
        Slot("norm", tf1="AdaMax_1", keras2=("u", "v"), lists=("_u",)),
    ),
    keras3="Adamax",
    keras3_hyper=MappingProxyType({"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
    keras2_positional=("momentum", "norm"),
    keras3_groups=(("momentum", "norm"),),
    keras2_classes=("Adamax",),
    tf1_ops=(_ops("ApplyAdaMax", ("momentum", "norm"), {"learning_rate": 4, "beta_1": 5, "beta_2": 6, "epsilon": 7}),),
    translations=MappingProxyType(
        {
            "keras2": _tr(
                momentum=_COPY,
                norm=SlotTranslation("", "copy", "exact", "u = max(beta_2*u, |g|); var -= lr*m/((1-beta_1^t)(u+eps))"),
            ),
            "keras2-legacy": _tr(
                momentum=SlotTranslation("", "copy", "exact", "same rule (fused ResourceApplyAdaMax)"),
                norm=_COPY,
            ),
        }
    ),
)
NADAM = Family(
    "Nadam",
    (Slot("momentum", keras2=("m",), lists=("_momentums",)), Slot("velocity", keras2=("v",), lists=("_velocities",))),
    keras3="Nadam",
    keras3_hyper=MappingProxyType({"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
    keras2_positional=("momentum", "velocity"),
    keras3_groups=(("momentum", "velocity"),),
    keras2_classes=("Nadam",),
    translations=MappingProxyType(
        {
            "keras2": _tr(
                momentum=SlotTranslation(
                    "",
                    "copy",
                    "approximate",
                    "tf_keras Nadam does not store its momentum-schedule product u_product, whose value depends on "
                    "how tf_keras ran (model.fit multiplies it once per variable per step, a reloaded model once per "
                    "variable too): Keras 3 restarts it at 1",
                ),
                velocity=_COPY,
            ),
            "keras2-legacy": _tr(
                momentum=SlotTranslation(
                    "",
                    "refuse",
                    "approximate",
                    "legacy tf_keras Nadam schedules its momentum by 0.96^(0.004*t) (schedule_decay), Keras 3 Nadam "
                    "by 0.96^t: another update rule, which no slot translation reproduces",
                ),
                velocity=_COPY,
            ),
        }
    ),
)
LION = Family(
    "Lion",
    (Slot("momentum", lists=("_momentums",)),),
    keras3="Lion",
    keras2_classes=("Lion",),
    keras3_hyper=MappingProxyType({"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.99}),
)
SGD = Family(
    "SGD",
    (),
    keras3="SGD",
    keras2_classes=("SGD",),
    tf1_ops=(_ops("ApplyGradientDescent", (), {"learning_rate": 1}),),
    tf1_class="GradientDescentOptimizer",
    keras3_hyper=MappingProxyType({"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}),
)
MOMENTUM = Family(
    "SGD(momentum)",
    (Slot("momentum", tf1="Momentum", keras2=("momentum", "m"), lists=("momentums", "_momentums"), when="momentum"),),
    keras3="SGD",
    keras2_positional=("momentum",),
    keras2_classes=("SGD",),
    tf1_ops=(
        _ops(
            "ApplyMomentum", ("momentum",), {"learning_rate": 2, "momentum": 4}, {"learning_rate": 2, "momentum": 5}, 3
        ),
    ),
    tf1_class="MomentumOptimizer",
    keras3_hyper=SGD.keras3_hyper,
    translations=MappingProxyType(
        {
            "tf1": _tr(
                momentum=SlotTranslation(
                    "",
                    "neg_lr",
                    "rounding",
                    "TF1 a = mu*a + g, var -= lr*a; Keras m = mu*m - lr*g, var += m: m = -lr*a with the target's rate",
                )
            ),
            "keras2": _tr(momentum=_COPY),
        }
    ),
)
RMSPROP = Family(
    "RMSprop",
    (
        Slot("velocity", tf1="RMSProp", keras2=("velocity", "rms"), lists=("_velocities", "velocities")),
        Slot("momentum", tf1="RMSProp_1", keras2=("momentum",), lists=("_momentums",), when="momentum"),
        Slot("average_gradient", keras2=("average_gradient", "mg"), lists=("_average_gradients",), when="centered"),
    ),
    keras3="RMSprop",
    keras2_positional=("velocity",),
    keras2_classes=("RMSprop",),
    tf1_ops=(
        _ops(
            "ApplyRMSProp",
            ("velocity", "momentum"),
            {"learning_rate": 3, "rho": 4, "momentum": 5, "epsilon": 6},
            centered=False,
        ),
        _ops(
            "ApplyCenteredRMSProp",
            ("average_gradient", "velocity", "momentum"),
            {"learning_rate": 4, "rho": 5, "momentum": 6, "epsilon": 7},
            centered=True,
        ),
    ),
    tf1_class="RMSPropOptimizer",
    keras3_hyper=MappingProxyType(
        {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False}
    ),
    translations=MappingProxyType(
        {
            "tf1": _tr(
                velocity=SlotTranslation("", "copy", "exact", "TF1 starts it at 1, Keras at 0: only the start differs"),
                momentum=SlotTranslation("", "copy", "exact", "increment includes lr on both sides"),
                average_gradient=SlotTranslation("", "copy", "exact", "centered"),
            ),
            "keras2": _tr(velocity=_COPY, momentum=_COPY, average_gradient=_COPY),
            "keras2-legacy": _tr(
                velocity=SlotTranslation(
                    "",
                    "copy",
                    "approximate",
                    "legacy Keras-2 RMSprop without momentum adds epsilon outside the sqrt; Keras 3 inside",
                    exact_if="momentum",
                ),
                momentum=_COPY,
                average_gradient=_COPY,
            ),
        }
    ),
)
ADAGRAD = Family(
    "Adagrad",
    (Slot("accumulator", tf1="Adagrad", keras2=("accumulator",), lists=("_accumulators", "accumulators")),),
    keras3="Adagrad",
    keras2_positional=("accumulator",),
    keras2_classes=("Adagrad",),
    tf1_ops=(
        _ops("ApplyAdagrad", ("accumulator",), {"learning_rate": 2}),
        _ops("ApplyAdagradV2", ("accumulator",), {"learning_rate": 2, "epsilon": 3}),
    ),
    tf1_class="AdagradOptimizer",
    keras3_hyper=MappingProxyType({"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7}),
    translations=MappingProxyType(
        {
            "tf1": _tr(
                accumulator=SlotTranslation(
                    "",
                    "minus_eps",
                    "rounding",
                    "TF1 divides by sqrt(acc), Keras by sqrt(acc + epsilon): acc - epsilon keeps every later step "
                    "equal",
                )
            ),
            "keras2": _tr(accumulator=_COPY),
            "keras2-legacy": _tr(
                accumulator=SlotTranslation(
                    "",
                    "copy",
                    "approximate",
                    "legacy tf_keras Adagrad (ResourceApplyAdagradV2) divides by sqrt(acc) + epsilon, Keras 3 by "
                    "sqrt(acc + epsilon)",
                    rounding_while=("epsilon", "initial_accumulator_value", 1e-6),
                )
            ),
        }
    ),
)
ADADELTA = Family(
    "Adadelta",
    (
        Slot(
            "accumulated_grad",
            tf1="Adadelta",
            keras2=("accumulated_grad", "accum_grad", "accumulator"),
            lists=("_accumulated_grads",),
        ),
        Slot(
            "accumulated_delta_var",
            tf1="Adadelta_1",
            keras2=("accumulated_delta_var", "accum_var", "delta_accumulator"),
            lists=("_accumulated_delta_vars",),
        ),
    ),
    keras3="Adadelta",
    keras3_hyper=MappingProxyType({"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7}),
    keras2_positional=("accumulated_grad", "accumulated_delta_var"),
    keras3_groups=(("accumulated_grad", "accumulated_delta_var"),),
    keras2_classes=("Adadelta",),
    tf1_ops=(
        _ops(
            "ApplyAdadelta", ("accumulated_grad", "accumulated_delta_var"), {"learning_rate": 3, "rho": 4, "epsilon": 5}
        ),
    ),
    tf1_class="AdadeltaOptimizer",
    translations=MappingProxyType(
        {
            "tf1": _tr(
                accumulated_grad=SlotTranslation(
                    "",
                    "copy",
                    "exact",
                    "same rule, epsilon inside both square roots: d = sqrt(delta+eps)/sqrt(acc+eps)*g; var -= lr*d",
                ),
                accumulated_delta_var=_COPY,
            ),
            "keras2": _tr(accumulated_grad=_COPY, accumulated_delta_var=_COPY),
            "keras2-legacy": _tr(
                accumulated_grad=SlotTranslation("", "copy", "exact", "same rule (fused ResourceApplyAdadelta)"),
                accumulated_delta_var=_COPY,
            ),
        }
    ),
)
_L1, _L2, _SHRINK = "l1_regularization_strength", "l2_regularization_strength", "l2_shrinkage_regularization_strength"
FTRL = Family(
    "Ftrl",
    (
        Slot("accumulator", tf1="Ftrl", keras2=("accumulator",), lists=("_accumulators",)),
        Slot("linear", tf1="Ftrl_1", keras2=("linear",), lists=("_linears",)),
    ),
    keras3="Ftrl",
    keras3_hyper=MappingProxyType(
        {
            "learning_rate": 0.001,
            "learning_rate_power": -0.5,
            "initial_accumulator_value": 0.1,
            "l1_regularization_strength": 0.0,
            "l2_regularization_strength": 0.0,
            "l2_shrinkage_regularization_strength": 0.0,
            "beta": 0.0,
        }
    ),
    keras3_groups=(("accumulator", "linear"),),
    keras2_classes=("Ftrl",),
    tf1_ops=(
        _ops(
            "ApplyFtrl",
            ("accumulator", "linear"),
            {"learning_rate": 4, _L1: 5, _L2: 6, "learning_rate_power": 7},
            {"learning_rate": 5, _L1: 6, _L2: 7, "learning_rate_power": 8},
            3,
        ),
        _ops(
            "ApplyFtrlV2",
            ("accumulator", "linear"),
            {"learning_rate": 4, _L1: 5, _L2: 6, _SHRINK: 7, "learning_rate_power": 8},
            {"learning_rate": 5, _L1: 6, _L2: 7, _SHRINK: 8, "learning_rate_power": 9},
            3,
        ),
    ),
    tf1_class="FtrlOptimizer",
    translations=MappingProxyType(
        {
            "tf1": _tr(
                accumulator=SlotTranslation(
                    "",
                    "copy",
                    "exact",
                    "same rule (ApplyFtrl/ApplyFtrlV2: the op's l2 is l2 + beta/(2*lr), the shrinkage enters the "
                    "linear term only); the initial accumulator only shapes step 0",
                ),
                linear=_COPY,
            ),
            "keras2": _tr(accumulator=_COPY, linear=_COPY),
            "keras2-legacy": _tr(
                accumulator=SlotTranslation("", "copy", "exact", "same rule (fused ResourceApplyFtrl/FtrlV2)"),
                linear=_COPY,
            ),
        }
    ),
)
ADAGRAD_DA = Family(
    "AdagradDA",
    (Slot("gradient_accumulator", tf1="AdagradDA"), Slot("gradient_squared_accumulator", tf1="AdagradDA_1")),
    keras3=None,
    tf1_ops=(
        _ops("ApplyAdagradDA", ("gradient_accumulator", "gradient_squared_accumulator"), {"learning_rate": 4}, grad=3),
    ),
)
PROXIMAL_ADAGRAD = Family(
    "ProximalAdagrad",
    (Slot("accumulator", tf1="ProximalAdagrad"),),
    keras3=None,
    tf1_ops=(_ops("ApplyProximalAdagrad", ("accumulator",), {"learning_rate": 2, "l1": 3, "l2": 4}),),
    tf1_class="ProximalAdagradOptimizer",
)
# TF1's ProximalGradientDescentOptimizer: a gradient step, then an l1/l2 proximal shrink Keras 3 has no step for.
PROXIMAL_SGD = Family(
    "ProximalGradientDescent",
    (),
    keras3=None,
    tf1_ops=(_ops("ApplyProximalGradientDescent", (), {"learning_rate": 1, "l1": 2, "l2": 3}),),
    tf1_class="ProximalGradientDescentOptimizer",
)

LAMB = Family("Lamb", ADAM.slots[:2], keras3="Lamb", keras3_groups=(("momentum", "velocity"),))
ADAFACTOR = Family(
    "Adafactor",
    (Slot("r", factored="rows"), Slot("c", factored="cols"), Slot("velocity")),
    keras3="Adafactor",
    keras3_groups=(("r", "c", "velocity"),),
)
SCHEDULE_FREE_ADAMW = Family(
    "ScheduleFreeAdamW", ADAM.slots[:2], keras3="ScheduleFreeAdamW", keras3_groups=(("momentum", "velocity"),)
)

# In the order slot-name guesses try them: the most common family first among those storing the same slots.
FAMILIES: tuple[Family, ...] = (
    ADAM,
    MOMENTUM,
    RMSPROP,
    ADAGRAD,
    ADADELTA,
    FTRL,
    ADAMAX,
    SGD,
    ADAMW,
    NADAM,
    LION,
    LAMB,
    ADAFACTOR,
    SCHEDULE_FREE_ADAMW,
    ADAGRAD_DA,
    PROXIMAL_ADAGRAD,
    PROXIMAL_SGD,
)


@dataclass(frozen=True)
class Wrapper:
    """An optimizer wrapper or option that adds state of its own around a family's slots.

    `hyper` are its options (Keras 3 names, the same in tf_keras) that must agree for a resumed run to be the
    source's; `translations` say, per source dialect, how its state becomes Keras 3 state; `caveats` are the
    named conditions under which that translation is not exact.
    """

    name: str
    slots: tuple[Slot, ...] = ()
    scalars: tuple[str, ...] = ()
    keras3_flag: str | None = None
    hyper: Mapping[str, Any] = field(default_factory=dict)  # option -> tf_keras and Keras 3 default
    translations: Mapping[str, SlotTranslation] = field(default_factory=dict)
    caveats: Mapping[str, str] = field(default_factory=dict)


EMA = Wrapper(
    "ema",
    (Slot("average", keras2=("average",), lists=("_model_variables_moving_average",)),),
    keras3_flag="use_ema",
    hyper=MappingProxyType({"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None}),
    translations=MappingProxyType(
        {
            # tf_keras (2.11+ optimizers) and Keras 3 both update average <- m*average + (1-m)*weight after every
            # update, overwrite the weights when (iterations + 1) % ema_overwrite_frequency == 0 (iterations read
            # before its increment), and overwrite them again in finalize_variable_values at the end of fit.
            "keras2": SlotTranslation(
                "average", "copy", "exact", "same rule: average <- m*average + (1-m)*weight after each update"
            ),
            "tf1": SlotTranslation(
                "average",
                "refuse",
                "approximate",
                "tf.train.ExponentialMovingAverage shadows are updated by ops the training script runs when it "
                "chooses, over the variables it passed to apply() (decay min(decay, (1+n)/(10+n)) with num_updates); "
                "the checkpoint cannot show that they ran once per optimizer step, over exactly the trainable "
                "variables, with a constant decay, as Keras 3's use_ema does, so they are not translated (the "
                "weights continue exactly; the averages do not)",
            ),
        }
    ),
    caveats=MappingProxyType(
        {
            "first_step": "the source is at step 0: Keras 3's first update sets the average to the weight "
            "(momentum 0 while iterations is 0), tf_keras blends it with the initial weight",
            "not_in_source": "the factory's optimizer averages the weights (use_ema=True) but the source keeps no "
            "averages for it to continue",
        }
    ),
)
LOSS_SCALE = Wrapper(
    "loss_scale",
    scalars=("current_loss_scale", "good_steps", "step_counter", "dynamic_scale"),
    keras3_flag=None,
    caveats=MappingProxyType(
        {
            # tf_keras LossScaleOptimizer(V3) keeps its scale and counter outside optimizer.variables, so
            # model.save("m.h5") writes the inner optimizer's weights only (checked with tf_keras 2.21).
            "keras2": "the legacy .h5 does not store the loss scale or its good-steps counter (tf_keras keeps them "
            "outside optimizer.variables), so the scaling cannot continue where it was: the output continues with the "
            "inner optimizer alone, and the steps the source would skip (overflowing gradients) or rescale at differ",
            "checkpoint": "its scale and counter are not carried over: the output continues with the inner "
            "optimizer alone, and the steps the source would skip (overflowing gradients) or rescale at differ",
            "target": "the factory's optimizer is a LossScaleOptimizer, whose dynamic scale and step counter convert "
            "does not translate",
        }
    ),
)
# Families whose sparse kernels (ResourceSparseApply*, TF1 and legacy tf_keras alike) update only the rows in
# the batch: the other rows' state does not decay, where Keras 3 updates every row.
SPARSE_ROWS_ONLY = ("SGD(momentum)", "RMSprop")
WRAPPERS: tuple[Wrapper, ...] = (
    EMA,
    Wrapper(
        "gradient_accumulation",
        (Slot("gradient_accumulator", lists=("_accumulated_gradients",)),),
        keras3_flag="gradient_accumulation_steps",
    ),
    LOSS_SCALE,
)
# Layouts tried on a Keras 3 weights file whose optimizer class is unknown (slots named by position).
KERAS3_UNKNOWN_LAYOUTS: tuple[tuple[tuple[tuple[str, ...], ...], tuple[str, ...]], ...] = (
    ((("momentum",),), ()),
    ((("momentum", "velocity"),), ()),
    ((("slot0", "slot1", "slot2"),), ()),
    ((("slot0",), ("slot1",)), ()),
    ((("slot0",), ("slot1",), ("slot2",)), ()),
)
# Trailing scalars some Keras 3 optimizers keep after their per-weight slots (Nadam's running product).
KERAS3_TRAILING: Mapping[str, tuple[str, ...]] = MappingProxyType({"Nadam": ("u_product",)})
# Names of step counters: TF1 `global_step`, tf_keras `iter` / `iterations`, Keras 3 `_iterations`/`iteration`.
STEP_COUNTERS: tuple[str, ...] = ("global_step", "iter", "iterations", "_iterations", "iteration")
# TF1 naming outside the per-family slot suffixes: the step, Adam's non-slot beta powers, and Estimators, which
# keep each optimizer's state under `training/<Optimizer>/<var>/<slot>`.
TF1_STEP_PATTERN = r"(^|/)global_step$"
TF1_NON_SLOT_PATTERN = r"(^|/)(beta1_power|beta2_power)(_\d+)?$"
ESTIMATOR_OPTIMIZER_PATTERN = r"^training/[A-Z][A-Za-z]*/"
ESTIMATOR_SLOT_PATTERN = r"^training/(?P<opt>[A-Za-z]+)/(?P<var>.+)/(?P<slot>[a-z_]+)$"
# TF1 non-slot optimizer variables (Adam keeps beta powers beside its slots).
TF1_NON_SLOT: tuple[str, ...] = ("beta1_power", "beta2_power")
# Optimizer variables only some formats hold, and why (a diff lists them as format-specific, not as lost state).
FORMAT_SPECIFIC: Mapping[str, str] = MappingProxyType(
    {
        "beta_power": "TF1 AdamOptimizer bias-correction accumulator (beta^(t+1)); Keras derives it from the step",
        "learning_rate": "optimizer learning-rate variable (a hyper-parameter, not per-weight state)",
        "hyperparameter": "optimizer hyper-parameter variable (tf_keras legacy optimizers store beta_1, decay, ...; "
        "Keras 3 keeps them in its config)",
        "rmsprop_momentum_zero": "TF1 RMSProp momentum slot at momentum 0: it holds only the last update, which "
        "the next step overwrites; Keras RMSprop(momentum=0) keeps none",
    }
)

# Constructor defaults per framework (tf.compat.v1.train.*Optimizer, tf_keras.optimizers.*); Keras 3's are on
# each record (`keras3_hyper`). None: a required argument.
_TF_KERAS_ADAM = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
FRAMEWORK_DEFAULTS: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "Adam": {
            "tf1": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
            "tf_keras": {**_TF_KERAS_ADAM, "amsgrad": False},
        },
        "SGD": {
            "tf1": {"learning_rate": None},
            "tf_keras": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
        },
        "SGD(momentum)": {
            "tf1": {"learning_rate": None, "momentum": None, "nesterov": False},
            "tf_keras": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
        },
        "RMSprop": {
            "tf1": {"learning_rate": None, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-10, "centered": False},
            "tf_keras": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
        },
        "Adagrad": {
            "tf1": {"learning_rate": None, "initial_accumulator_value": 0.1},
            "tf_keras": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
        },
        "Adadelta": {
            "tf1": {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-8},
            "tf_keras": {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7},
        },
        "Ftrl": {
            "tf1": {
                "learning_rate": None,
                "learning_rate_power": -0.5,
                "initial_accumulator_value": 0.1,
                _L1: 0.0,
                _L2: 0.0,
                _SHRINK: 0.0,
            },
            "tf_keras": {
                "learning_rate": 0.001,
                "learning_rate_power": -0.5,
                "initial_accumulator_value": 0.1,
                _L1: 0.0,
                _L2: 0.0,
                _SHRINK: 0.0,
            },
        },
        "Adamax": {"tf_keras": dict(_TF_KERAS_ADAM)},
        "Nadam": {"tf_keras": dict(_TF_KERAS_ADAM)},
        "AdamW": {"tf_keras": {**_TF_KERAS_ADAM, "amsgrad": False, "weight_decay": 0.004}},
    }
)
