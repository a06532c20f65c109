"""The table of models: one small spec per model of the paper's family, read by every module
that needs to know what a model is (the settings' checks, training, distribution, reports,
--load and --compare) instead of comparing model names.

Adding a model: an entry here, its tower (or builder) in models.py, and its tests. A spec says
what the model is made of (its towers), how it trains (pointwise labels or pairwise triples),
which settings it uses, and its defaults; `layer_name` names its tables and layers.
"""
import dataclasses

# Settings only a model with an MLP tower reads
MLP_SETTINGS = ("hidden_units", "dropout")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    towers: tuple             # what scores a (user, artist): "mlp", "gmf", "dot" (BPR's); ()
    #                           for a model that learns nothing (popularity)
    pairwise: bool = False    # trains on (user, played, unplayed) triples, not labelled rows
    history_input: bool = False   # --user_input=history: a user as the artists they played
    initializer: str = "normal"   # embedding tables: the paper's N(0, 0.01), or Keras' uniform
    unused: tuple = ()        # settings it never reads, refused when given (beyond MLP_SETTINGS)
    unused_why: str = ""      # ... and why, for that one-line error
    defaults: dict = dataclasses.field(default_factory=dict)   # chosen on validation artists

    @property
    def trained(self):
        return bool(self.towers)

    @property
    def pretrainable(self):
        """Towers that are models of their own can be trained first (the paper's NeuMF)."""
        return len(self.towers) > 1

    def layer_name(self, tower, part):
        """The name of `part` ("user_embedding", "item_embedding", "hidden_1", ...) of `tower`:
        prefixed by the tower's name where the model has more than one."""
        return f"{tower}_{part}" if self.pretrainable else part

    @property
    def item_table(self):
        """The artist table whose rows `--similar_to` compares: the first tower's."""
        return self.layer_name(self.towers[0], "item_embedding")


# In --compare's order: the baseline first, then by the paper's order of complexity
MODELS = {spec.name: spec for spec in (
    Spec("pop", towers=(), unused=("num_epoch", "validation", "patience", "resume",
                                   "num_factor", "l2", "learning_rate", "optimizer",
                                   "batch_size", "neg_ratio", "rows"),
         unused_why="ranks artists by their training listeners and trains nothing"),
    Spec("bpr", towers=("dot",), pairwise=True, unused=("neg_ratio", "rows"),
         unused_why="trains on (user, played, unplayed) triples, one negative a play in a row "
                    "of its own",
         defaults={"NUM_FACTOR": 128, "L2": 0.01, "LEARNING_RATE": 0.003, "NUM_EPOCH": 30,
                   "VALIDATION": True}),
    Spec("gmf", towers=("gmf",), history_input=True,
         defaults={"NUM_FACTOR": 128, "NEG_RATIO": 8, "L2": 0.001, "LEARNING_RATE": 0.0005,
                   "NUM_EPOCH": 30, "VALIDATION": True, "USER_INPUT": "history"}),
    # the notebook's model keeps the notebook's settings, and Keras' default initialiser
    Spec("mlp", towers=("mlp",), history_input=True, initializer="uniform"),
    Spec("neumf", towers=("gmf", "mlp"), history_input=True,
         defaults={"NUM_FACTOR": 128, "NEG_RATIO": 8, "L2": 0.001, "LEARNING_RATE": 0.001,
                   "NUM_EPOCH": 30, "VALIDATION": True, "USER_INPUT": "history"}),
)}
TRAINED = tuple(name for name, spec in MODELS.items() if spec.trained)


def spec(name):
    """The spec of model `name`; a ValueError naming the choices for any other name."""
    if name not in MODELS:
        raise ValueError(f"--model={name!r} is unknown; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def names(test=lambda spec: True, last="and"):
    """'gmf, mlp and neumf': the models for which `test(spec)` holds, in the table's order."""
    chosen = [name for name, spec in MODELS.items() if test(spec)]
    return (", ".join(chosen[:-1]) + f" {last} " + chosen[-1] if len(chosen) > 1
            else "".join(chosen))


def unused_settings(model):
    """Settings `model` never reads -> (their names, why), MLP_SETTINGS first."""
    model = MODELS[model]
    no_mlp = () if "mlp" in model.towers else MLP_SETTINGS
    return no_mlp, model.unused, model.unused_why
