"""The unpruned model: the reference row."""

from diet.methods.base import METHODS, MaskSelection, Method, PruningContext


@METHODS.register("dense")
class Dense(Method):
    name = "dense"
    table_rank = 0
    baseline = False
    seeded = False  # data-free and deterministic: no seed changes the result
    prunes = False

    def select(self, ctx: PruningContext, inputs: object) -> MaskSelection:
        return MaskSelection()
