"""Program jobs: run an existing program as a job, without writing Python.

``program`` (the ``Program`` template and its handler), ``args`` (placeholders
and the rules a variable's value must keep), ``process`` (starting, reading
and stopping the program's process group) and ``outputs`` (each job's output
folder and the files recorded from it).

Rule: programs register through the engine's handler registry; they never
import the app, the server or the CLI.
"""

from .program import (
    BUILTIN_PLACEHOLDERS,
    SELF_CHECKED,
    STANDARD_VARIABLES,
    Program,
    Variable,
    add_programs,
)

__all__ = ["Program", "Variable", "add_programs", "BUILTIN_PLACEHOLDERS", "STANDARD_VARIABLES",
           "SELF_CHECKED"]
