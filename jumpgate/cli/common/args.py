"""Command-line parsing shared by ``jump``, ``jumpctl`` and ``jumpgate``."""

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: what was wrong, and where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
