"""Reading the user's configuration: config files strictly, command-line values as YAML, schema errors
as one line. Snakemake loads the config; these make what it loaded trustworthy and its errors clear."""

from __future__ import annotations

from pathlib import Path

import yaml


class ConfigFileProblem(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigFileProblem(
                f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_strict(path: str | Path) -> dict:
    """A YAML config file as a dict; any problem is an error naming the file (and the line)."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_StrictLoader)
    except OSError as e:
        raise ConfigFileProblem(f"config file {path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigFileProblem(f"config file {path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from e
    except ConfigFileProblem as e:
        raise ConfigFileProblem(f"config file {path}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileProblem(f"config file {path}: expected keys at the top level, got {type(data).__name__}")
    return data


def yaml_values(values: dict) -> dict:
    """`--config key=value` values as YAML would read them: Snakemake reads `[1,16]` as ['1', '16'] and
    `true` as the text 'true'; here they become [1, 16] and True, as in a config file."""
    def parse(v):
        if isinstance(v, str):
            try:
                parsed = yaml.safe_load(v)
            except yaml.YAMLError:
                return v
            return v if parsed is None and v.strip() not in ("null", "~") else parsed
        if isinstance(v, list):
            return [parse(x) for x in v]
        if isinstance(v, dict):
            return {k: parse(x) for k, x in v.items()}
        return v

    return {k: parse(v) for k, v in values.items()}


def deep_update(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def schema_error_message(error: Exception) -> str:
    """One line naming the key and the value from a schema error (or its cause), not the whole schema."""
    cause = error if hasattr(error, "absolute_path") else error.__context__
    if not hasattr(cause, "absolute_path") or not hasattr(cause, "message"):
        return str(error)
    if cause.validator in ("oneOf", "anyOf") and cause.context:
        # A value no branch accepts: report the branch of the value's own kind (a list: what is wrong in it),
        # the error deepest inside the value, rather than "not of type string" from another branch.
        cause = max(cause.context, key=lambda e: (e.validator != "type", len(e.absolute_path)))
    key = ""
    for part in cause.absolute_path:
        key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{part}"
    message = cause.message
    if cause.validator == "additionalProperties" and isinstance(cause.schema.get("properties"), dict):
        message += f"; known keys: {', '.join(cause.schema['properties'])}"
    if cause.validator == "pattern" and key == "device_name":
        message = (f"{cause.instance!r} is not a device name: letters, digits, '_', '-', spaces (they become '_', "
                   "as the engines name files) and dots inside the name; no '/', ',', '=' or leading dot")
    return f"{key or 'top level'}: {message}"


def apply_aliases(config: dict) -> dict:
    """`search_space: vllm` (the engines' 1280 configs, nothing more) as the schema's keys: no values given
    (the schema's defaults are vLLM's), no extra region and no prune rule (unless tuning.prune_accumulators
    is given). Call before the schema fills in defaults."""
    if config.get("search_space") == "vllm":
        if config.get("search_space_extra"):
            raise ConfigFileProblem("search_space: vllm excludes search_space_extra (it is vLLM's space alone); "
                                    "drop one of them")
        config["search_space"], config["search_space_extra"] = {}, []
        tuning = config.get("tuning")
        if tuning is None or isinstance(tuning, dict):
            config["tuning"] = {"prune_accumulators": 0, **(tuning or {})}
    return config


def check_whole_numbers(config: dict, schema_path: str | Path) -> None:
    """Every value the schema calls an `integer` is a whole number written as one: JSON schema counts 8.0 as an
    integer, but a batch size or a launch parameter of 16.0 names files and reaches the kernel as a float.
    Call after the schema has validated (and filled in) the config."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    base = jsonschema.validators.validator_for(schema)
    strict = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)))
    for error in strict(schema).iter_errors(config):
        # a float among oneOf's choices (compile_workers: an integer or auto) is the value itself
        value = error.instance
        if isinstance(value, float) and value.is_integer():
            key = ""
            for part in error.absolute_path:
                key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{part}"
            raise ConfigFileProblem(f"{key}: {value!r} is not a whole number (write {int(value)})")


def main(argv: list[str] | None = None) -> int:
    """`python -m w8a8_tuner.plan.config FILE...`: read config files as the workflow reads them, naming a problem with
    its file and line. Snakemake reads a --configfile before the workflow runs and says only "Config file is not
    valid JSON or YAML", naming neither (TESTING.md, Not covered here)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m w8a8_tuner.plan.config FILE...", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            load_strict(path)
        except ConfigFileProblem as e:
            print(f"Invalid configuration: {e}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: readable (the schema checks the values when the workflow runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
