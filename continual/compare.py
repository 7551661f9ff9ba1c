"""``python -m continual.compare <runs or sweep dir>``: see :mod:`continual.analysis.compare`."""

from continual.analysis.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
