"""The two ways a run fails, each as one line for the user and an exit code.

`InputError` (exit code 2): what the user gave is at fault: a setting, a data or split file, a
saved model, a --resume that does not fit, data that leave nothing to train. Changing the
command or the files fixes it.
`RunError` (exit code 1): the run cannot go on for a reason outside the input: training
diverged, the machine lacks memory, disk or a working TensorFlow.
Every module raises these two; the script's `main` turns them into the line and the code.
A message is meant for the user as it is: it names the file, row or setting, the value and
what would be accepted.
"""


class InputError(ValueError):
    """Bad input: a setting, a file, a saved model or checkpoint that does not fit; exit 2."""
    exit_code = 2


class RunError(RuntimeError):
    """The run cannot go on (divergence, memory, the environment); exit 1."""
    exit_code = 1


def error_reason(error, line=0):
    """One line of an exception's message for a one-line error (the first by default, -1 for
    the last), or its type's name when the message is empty."""
    return (str(error).strip().splitlines() or [type(error).__name__])[line]


def first_sentence(error, limit=300):
    """The first sentence of `error_reason(error)`, at most `limit` characters: library messages
    go on with advice that is not the user's."""
    return error_reason(error).split(". ")[0].rstrip(".")[:limit]
