"""bnorm's exception types.

Every error bnorm raises derives from :class:`bnorm.Error` and from the built-in
exception Python code would expect for it, so ``except ValueError`` keeps working::

    bnorm.Error                      base of all of them
    bnorm.ArgumentError(ValueError)  an argument outside its domain (momentum, epsilon, axis)
    bnorm.ShapeError(ArgumentError)  an array whose shape does not fit
    bnorm.NumericalError(FloatingPointError)  non-finite batch statistics
    bnorm.StateError(RuntimeError)   valid in general, not in the object's current state
    bnorm.FileError(OSError)         a file that cannot be opened, read or written
    bnorm.FormatError(ValueError)    a file whose contents are not in the expected format

The message is the C++ library's: "where: argument: expected E, received R".
"""


class Error(Exception):
    """Base of every exception bnorm raises."""


class ArgumentError(Error, ValueError):
    """An argument value outside its domain (C++ bnorm::ArgumentError)."""


class ShapeError(ArgumentError):
    """An array whose shape does not fit (C++ bnorm::ShapeError)."""


class NumericalError(Error, FloatingPointError):
    """Batch statistics that are not finite (C++ bnorm::NumericalError)."""


class StateError(Error, RuntimeError):
    """A call not valid in the object's current state (C++ bnorm::StateError)."""


class FileError(Error, OSError):
    """A file or folder that is missing or cannot be opened, read or written
    (C++ bnorm::io::FileError)."""


class FormatError(Error, ValueError):
    """A file whose contents are not in the expected format (C++ bnorm::io::FormatError)."""


__all__ = ["Error", "ArgumentError", "ShapeError", "NumericalError", "StateError", "FileError",
           "FormatError"]
