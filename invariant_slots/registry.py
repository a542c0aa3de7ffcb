"""Name -> class registries, so configs can name modules by string."""

import ast
import difflib
from typing import Any, Callable, Generic, TypeVar

import ml_collections

T = TypeVar("T")


class ConfigError(ValueError):
  """A configuration or input problem the user can fix; printed as one line."""


class Registry(Generic[T]):
  """Maps names to classes; `build` instantiates one from a `ConfigDict`."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, type[T]] = {}

  def register(self, name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator adding the class under `name`."""

    def add(cls: type[T]) -> type[T]:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice.")
      self._entries[name] = cls
      return cls

    return add

  @property
  def names(self) -> list[str]:
    return list(self._entries)

  def get(self, name: str) -> type[T]:
    if name not in self._entries:
      close = difflib.get_close_matches(str(name), self.names, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(
          f"Unknown {self.kind} {name!r};{hint} valid names: {', '.join(self.names)}.")
    return self._entries[name]

  def build(self, config: ml_collections.ConfigDict | dict, **kwargs: Any) -> T:
    """Instantiates `config.name` with the remaining config keys plus kwargs."""
    options = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if "name" not in options:
      raise ConfigError(f"The {self.kind} config {options} has no 'name'; "
                        f"valid names: {', '.join(self.names)}.")
    name = options.pop("name")
    options.update(kwargs)
    cls = self.get(name)
    try:
      return cls(**options)
    except TypeError as e:
      raise ConfigError(f"Bad options for {self.kind} {name!r}: {e}") from None


def parse_call(spec: str) -> tuple[str, list[Any], dict[str, Any]]:
  """`"name(arg, ..., key=value)"` -> `(name, args, kwargs)`; arguments are Python literals."""
  name, _, rest = spec.strip().partition("(")
  if rest and not rest.endswith(")"):
    raise ConfigError(f"Malformed {spec!r}; expected 'name(args)'.")
  try:
    call = ast.parse(f"f({rest[:-1]})", mode="eval").body
    args = [ast.literal_eval(arg) for arg in call.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"Bad arguments in {spec!r}: {e}") from None
  return name, args, kwargs
