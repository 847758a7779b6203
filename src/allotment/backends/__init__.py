"""Backends run admitted jobs: ``local`` (processes on this machine), ``fake`` (tests)."""
