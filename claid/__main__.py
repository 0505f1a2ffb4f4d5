"""``python -m claid <command>``: the same as the ``claid`` console script
(:mod:`claid.cli`); ``python -m claid --help`` lists the commands."""

from claid.cli import main

if __name__ == "__main__":
    main()
