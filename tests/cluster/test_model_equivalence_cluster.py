"""The hypothesis machine of tests/limits/test_model_equivalence.py, against the cluster: the
scripts equal the model on cluster partitions too, call by call and key by key."""

from tests.limits.test_model_equivalence import test_scripts_equal_the_model  # noqa: F401
