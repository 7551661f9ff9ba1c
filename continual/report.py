"""``python -m continual.report <runs or sweep dir>``: see :mod:`continual.analysis.report`."""

from continual.analysis.report import main

if __name__ == "__main__":
    raise SystemExit(main())
