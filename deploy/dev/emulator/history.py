"""history patch: see __init__.py (not written yet)."""


def install():
    pass
