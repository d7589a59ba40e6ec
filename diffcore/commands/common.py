"""Argument types shared by the subcommands: each rejects bad values with a usage error."""
from __future__ import annotations

import argparse
import json

from ..validation import check_int, check_positive


def positive_int(name):
    def parse(text):
        try:
            return check_int(name, int(text), lo=1)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def nonneg_int(name):
    def parse(text):
        try:
            return check_int(name, int(text), lo=0)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def positive_float(name):
    def parse(text):
        try:
            return check_positive(name, float(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def unit_interval(name):
    """A float in [0, 1) (a decay rate)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number in [0, 1); got {text!r}") from None
        if not 0 <= value < 1:
            raise argparse.ArgumentTypeError(f"{name} must lie in [0, 1); got {text}")
        return value
    return parse


def json_object(name):
    def parse(text):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"{name} must be a JSON object, e.g. '{{\"ch\": 64}}': {e}") from None
        if not isinstance(obj, dict):
            raise argparse.ArgumentTypeError(f"{name} must be a JSON object; got {text!r}")
        return obj
    return parse
