"""fastmetro-stream, the application: the root config composed of the stages' sections, the stages built
from it (`build_stages`), the Python API (`run`) and the `fastmetro-stream` command. The only package that
knows every stage.

    import fastmetro_stream
    summary = fastmetro_stream.run(fastmetro_stream.load_config(None, ["source=video.mp4"]))
"""
from __future__ import annotations

from typing import Any

__all__ = ["run", "build_stages", "load_config", "Config", "ConfigError"]

_NAMES = {"run": "api", "build_stages": "api", "load_config": "config", "Config": "config", "ConfigError": "config"}


def __getattr__(name: str) -> Any:  # loaded on first use, so `import fastmetro_stream` stays cheap
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value
