import pytest

# The shared checks live in harness.py; rewrite its asserts so that failures show their values.
pytest.register_assert_rewrite("tests.lambda_runtime.harness")
