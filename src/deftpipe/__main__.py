"""``python -m deftpipe`` = the ``deftpipe`` command."""

from deftpipe.cli import main

if __name__ == "__main__":
    main()
