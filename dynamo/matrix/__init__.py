"""The support matrix: load and validate `matrix/support_matrix.toml`, and query it."""

from dynamo.matrix.load import MatrixInvalid, default_path, from_dict, load, loads
from dynamo.matrix.model import Matrix
from dynamo.matrix.query import InvalidCombination, Target, resolve, targets

__all__ = ["InvalidCombination", "Matrix", "MatrixInvalid", "Target", "default_path", "from_dict",
           "load", "loads", "resolve", "targets"]
