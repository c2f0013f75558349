"""The package's version, in a module of its own: the modules that report it
(``GetBuildString``, ``jobmonitor --version``) import it from here, not from the
package, whose ``__init__`` imports them."""

__version__ = "0.1.0"
