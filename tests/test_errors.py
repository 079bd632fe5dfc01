"""iflow/errors.py: one message, read as parameters by the library and as flags by the command line."""

from iflow.errors import UserError, param


def test_parameters_print_plainly_in_python_and_as_flags_on_the_command_line() -> None:
    error = UserError(f"lower {param('batch_size')} or raise {param('val_fraction')}; data at /tmp/batch_size.npz")
    assert str(error) == "lower batch_size or raise val_fraction; data at /tmp/batch_size.npz"
    assert error.for_command_line() == "lower --batch-size or raise --val-fraction; data at /tmp/batch_size.npz"


def test_command_line_message_is_one_line() -> None:
    assert UserError("first\n  second").for_command_line() == "first second"
