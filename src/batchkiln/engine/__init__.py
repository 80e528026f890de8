"""The engine: the only code that moves batch states."""
