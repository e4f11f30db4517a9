"""Registries by name: how a method (`--method`) or a soft-prompt parameterization
(`--parameterization`) becomes available, one decorated class each."""


def registrar(table: dict):
    """A decorator factory filing classes in `table`: `@register("name")` sets `cls.name` too."""

    def register(name: str):
        def wrap(cls):
            cls.name = name
            table[name] = cls
            return cls

        return wrap

    return register
