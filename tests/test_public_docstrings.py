"""Every public name has a docstring a user can act on, checked statically.

The public names are those the API reference shows (every `::: name` of
`docs/api/*.md`, and a module's public members there) and every name of a
package's `__all__`. They are read by griffe (what mkdocstrings reads, so no
TensorFlow) and their docstrings parsed as Google style:

* a function (and a public method of a public class) documents each of its
  parameters in `Args:` under the signature's names, `Returns:` (or
  `Yields:`) when its return annotation is not `None`, and `Raises:` naming
  the errors its body raises itself; its parameters and return are annotated;
* a class documents its constructor in its own docstring (the Keras
  convention: the `__init__` or dataclass fields in `Args:` or
  `Attributes:`, the errors of `__init__`/`__post_init__` in `Raises:`);
* the main entry points carry an `Example:` (which
  tests/test_docstring_examples.py runs).

Each test prints every offender, so the list is what there is to fix.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re

import griffe
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The main entry points: where a user starts, so their docstrings show a run.
ENTRY_POINTS = (
    "tf_smelu.activations.smelu",
    "tf_smelu.layers.SmeLU",
    "tf_smelu.conversion.convert_activations",
    "tf_smelu.reproducibility.study.ReplicaStudy",
    "tf_smelu.reproducibility.callbacks.PredictionDifferenceCallback",
    "tf_smelu.experiment.advisor.recommend",
    "tf_smelu.metrics.prediction_difference.absolute_pd",
    "tf_smelu.metrics.pairwise.pairwise_pd",
    "tf_smelu.serving.serve_without_package",
)

# `tf_smelu.__getattr__` imports these on first use (griffe cannot follow it).
_LAZY = {"tf_smelu.ReplicaStudy", "tf_smelu.PredictionDifferenceCallback"}

# Raising these says "not for this object" rather than reporting a user's mistake.
_NOT_DOCUMENTED_ERRORS = {"NotImplementedError", "AttributeError"}


@functools.lru_cache(maxsize=1)
def _package() -> griffe.Module:
    return griffe.load("tf_smelu", search_paths=[str(ROOT)], docstring_parser="google",
                       resolve_aliases=False)


def _all_names(init: pathlib.Path) -> list[str]:
    """`__all__` of a package's `__init__.py`, read statically (as tests/test_docs.py)."""
    names = []
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                getattr(target, "id", None) == "__all__" for target in node.targets):
            names += [element.value for element in node.value.elts]
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "attr", None) == "append"
                and getattr(node.value.func.value, "id", None) == "__all__"):
            names += [argument.value for argument in node.value.args]
    return names


def _documented_paths() -> list[str]:
    """Dotted paths of what the API reference renders and what packages export."""
    paths = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        paths += re.findall(r"^::: *([\w.]+)", page.read_text(encoding="utf-8"), re.MULTILINE)
    for init in sorted((ROOT / "tf_smelu").glob("**/__init__.py")):
        package = ".".join(init.parent.relative_to(ROOT).parts)
        paths += [f"{package}.{name}" for name in _all_names(init)]
    return paths


def _target(obj):
    """The definition behind an alias, or None for one outside tf_smelu."""
    if obj.is_alias:
        if not obj.target_path.startswith("tf_smelu."):
            return None
        return obj.final_target
    return obj


def _public_members(module) -> list:
    return [member for name, member in module.members.items()
            if not name.startswith("_") and member.is_public and not member.is_module]


@functools.lru_cache(maxsize=1)
def public_objects() -> dict[str, object]:
    """Every public function, class, method and attribute, by its canonical path."""
    package = _package()
    found: dict[str, object] = {}

    def add(obj) -> None:
        obj = _target(obj)
        if obj is None or obj.path in found:
            return
        if obj.is_module:
            for member in _public_members(obj):
                add(member)
            return
        found[obj.path] = obj
        if obj.is_class:
            for name, member in obj.members.items():
                if not name.startswith("_") and not member.is_alias and (
                        member.is_function or "property" in member.labels):
                    add(member)

    for path in _documented_paths():
        try:
            add(package.modules_collection.get_member(path))
        except KeyError:
            # Loaded lazily by a module `__getattr__`: checked where it is defined.
            assert path in _LAZY, f"{path} is exported but not found"
    return found


def _sections(obj) -> dict[str, list]:
    """Parsed Google-style sections of a docstring, by kind (`parameters`, `returns`, ...)."""
    sections: dict[str, list] = {}
    if obj.docstring is None:
        return sections
    for section in obj.docstring.parse("google", warnings=False):
        sections.setdefault(section.kind.value, []).append(section.value)
    return sections


def _documented_names(sections, *kinds: str) -> set[str]:
    return {item.name.lstrip("*") for kind in kinds for value in sections.get(kind, [])
            for item in value}


@functools.lru_cache(maxsize=None)
def _module_tree(filepath: pathlib.Path) -> dict[int, ast.AST]:
    """Function definitions of a source file by the line they end on (unique per definition)."""
    tree = ast.parse(filepath.read_text(encoding="utf-8"))
    return {node.end_lineno: node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _raised(function) -> set[str]:
    """Names of the errors a function's own body raises (not its nested functions').

    A bare `raise` re-raises what it caught; an error made by a call to a
    lower-case helper (`raise _error(...)`) counts under its helper's name.
    """
    node = _module_tree(pathlib.Path(function.filepath)).get(function.endlineno)
    if node is None:
        return set()
    names = set()
    pending = list(node.body)
    while pending:
        statement = pending.pop()
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(statement, ast.Raise) and statement.exc is not None:
            exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
            name = getattr(exc, "attr", None) or getattr(exc, "id", None) or "?"
            if name not in _NOT_DOCUMENTED_ERRORS:
                names.add(name)
        pending += list(ast.iter_child_nodes(statement))
    return names


def _raise_problems(sections, raised: set[str]) -> list[str]:
    if not raised:
        return []
    if "raises" not in sections:
        return [f"no Raises: (raises {', '.join(sorted(raised))})"]
    listed = {str(item.annotation).rsplit(".", 1)[-1]
              for value in sections["raises"] for item in value}
    missing = {name for name in raised if name[:1].isupper() and name not in listed}
    return [f"Raises: misses {', '.join(sorted(missing))}"] if missing else []


def _parameters(function) -> list:
    """The parameters a caller gives: a method's first one (`self`, `cls`) is bound."""
    parameters = list(function.parameters)
    if function.parent is not None and function.parent.is_class and parameters \
            and "staticmethod" not in function.labels:
        parameters = parameters[1:]
    return parameters


def _is_none(annotation) -> bool:
    """Whether a return annotation says nothing is returned (also `Iterator[None]`)."""
    return annotation is not None and re.fullmatch(r"((\w+\.)*Iterator\[)?None\]?",
                                                   str(annotation)) is not None


def _function_problems(function) -> list[str]:
    if "property" in function.labels:
        return [] if function.docstring else ["no docstring"]
    if not function.docstring:
        return ["no docstring"]
    sections = _sections(function)
    problems = []
    names = [p.name for p in _parameters(function)]
    documented = _documented_names(sections, "parameters", "other parameters")
    if missing := [n for n in names if n not in documented]:
        problems.append(f"Args: misses {', '.join(missing)}")
    if extra := sorted(documented - set(names)):
        problems.append(f"Args: names {', '.join(extra)}, not in the signature")
    if unannotated := [p.name for p in _parameters(function) if p.annotation is None]:
        problems.append(f"no type hint for {', '.join(unannotated)}")
    if function.returns is None:
        problems.append("no return annotation")
    elif not _is_none(function.returns) and not ({"returns", "yields"} & set(sections)):
        problems.append("no Returns:")
    return problems + _raise_problems(sections, _raised(function))


def _class_problems(cls) -> list[str]:
    if not cls.docstring:
        return ["no docstring"]
    sections = _sections(cls)
    problems = []
    init = cls.members.get("__init__")
    if init is not None and not init.is_alias and init.is_function:
        names = [p.name for p in _parameters(init)]
        documented = _documented_names(sections, "parameters", "other parameters", "attributes")
        if missing := [n for n in names if n not in documented]:
            problems.append(f"Args: misses {', '.join(missing)}")
        if extra := sorted(_documented_names(sections, "parameters") - set(names)):
            problems.append(f"Args: names {', '.join(extra)}, not in the signature")
        # A dataclass's synthesized __init__ has no source: its fields carry the hints.
        if init.lineno is not None and init.filepath == cls.filepath:
            if unannotated := [p.name for p in _parameters(init) if p.annotation is None]:
                problems.append(f"no type hint for {', '.join(unannotated)}")
    raised = set()
    for name in ("__init__", "__post_init__"):
        method = cls.members.get(name)
        if method is not None and not method.is_alias and method.is_function \
                and method.lineno is not None:
            raised |= _raised(method)
    return problems + _raise_problems(sections, raised)


def _attribute_problems(attribute) -> list[str]:
    return [] if attribute.docstring else ["no docstring"]


def offenders() -> list[str]:
    lines = []
    for path, obj in sorted(public_objects().items()):
        if obj.is_class:
            problems = _class_problems(obj)
        elif obj.is_function:
            problems = _function_problems(obj)
        else:
            problems = _attribute_problems(obj)
        lines += [f"{path} ({obj.relative_filepath}:{obj.lineno}): {p}" for p in problems]
    return lines


def test_the_walk_finds_the_public_names():
    # The walk itself can fail: names from each source of public names must be among
    # those it checks.
    found = public_objects()
    for path in ("tf_smelu.activations.smelu",            # a module the reference renders
                 "tf_smelu.data.features.FeatureSpec",     # a package's __all__, through an alias
                 "tf_smelu.layers.SmeLU.call",             # a public method
                 "tf_smelu.metrics.pairwise.OUTLIER_THRESHOLD"):
        assert path in found, path
    assert not any(path.rsplit(".", 1)[-1].startswith("_") for path in found)
    assert len(found) > 200


def test_every_public_name_documents_its_arguments_returns_and_errors():
    found = offenders()
    print("\n".join(found))
    assert not found, f"{len(found)} docstring problems:\n" + "\n".join(found)


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_main_entry_points_have_an_example(path):
    obj = public_objects().get(path) or _target(_package().modules_collection.get_member(path))
    assert "examples" in _sections(obj), f"{path} ({obj.relative_filepath}) has no Example:"


def test_the_checks_catch_what_they_check(tmp_path):
    # A function missing each section is reported for each; a complete one is not.
    source = tmp_path / "probe.py"
    source.write_text(
        'def bare(a: int) -> int:\n'
        '    """Does."""\n'
        '    if a < 0:\n'
        '        raise ValueError("negative")\n'
        '    return a\n'
        '\n'
        'def full(a: int) -> int:\n'
        '    """Does.\n\n    Args:\n        a: a number.\n\n    Returns:\n        a.\n\n'
        '    Raises:\n        ValueError: if `a` is negative.\n    """\n'
        '    if a < 0:\n'
        '        raise ValueError("negative")\n'
        '    return a\n'
        '\n'
        'class Thing:\n'
        '    """A thing."""\n'
        '\n'
        '    def __init__(self, size: int):\n'
        '        if size < 0:\n'
        '            raise ValueError("negative")\n', encoding="utf-8")
    module = griffe.load("probe", search_paths=[str(tmp_path)], docstring_parser="google")
    assert _function_problems(module["bare"]) == [
        "Args: misses a", "no Returns:", "no Raises: (raises ValueError)"]
    assert _function_problems(module["full"]) == []
    assert _class_problems(module["Thing"]) == ["Args: misses size",
                                                "no Raises: (raises ValueError)"]


# ---- flags: every flag of the command-line programs has help ----

_HELP_POSITION = {"DEFINE_enum": 3, "DEFINE_multi_enum": 3}  # after the allowed values
_FLAG_SOURCES = ("tf_smelu/**/*.py", "examples/*.py")


def _help_argument(call: ast.Call) -> ast.AST | None:
    """The help argument of an absl `DEFINE_*` call or of an `option` field."""
    keyword = next((k.value for k in call.keywords if k.arg == "help"), None)
    name = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
    position = 1 if name == "option" else _HELP_POSITION.get(name, 2)
    if keyword is None and len(call.args) > position:
        keyword = call.args[position]
    return keyword


def _help_problem(node: ast.AST | None) -> str | None:
    if node is None:
        return "no help"
    if isinstance(node, ast.Constant):
        text = node.value
        return None if isinstance(text, str) and text.strip() else "empty help"
    return None  # computed (a variable, an f-string, a function): checked where it is made


def _defines_flags(call: ast.Call, uses_option: bool) -> str | None:
    """The name of a call that defines a flag (`option` fields become flags), else None."""
    name = getattr(call.func, "attr", None) or getattr(call.func, "id", None) or ""
    if name.startswith("DEFINE_") and name != "DEFINE_alias" or name == "option" and uses_option:
        return name
    return None


def _uses_option(path: pathlib.Path, tree: ast.Module) -> bool:
    """Whether `option` in this file is `tf_smelu.training.config.option`."""
    return path == ROOT / "tf_smelu" / "training" / "config.py" or any(
        isinstance(node, ast.ImportFrom) and node.module == "tf_smelu.training.config"
        and any(alias.name == "option" for alias in node.names) for node in tree.body)


def flag_offenders() -> list[str]:
    """`file:line: DEFINE_x: problem` for every flag (or flag field) without help."""
    lines = []
    for pattern in _FLAG_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            uses_option = _uses_option(path, tree)
            for call in ast.walk(tree):
                if isinstance(call, ast.Call) and (name := _defines_flags(call, uses_option)):
                    if problem := _help_problem(_help_argument(call)):
                        lines.append(f"{path.relative_to(ROOT)}:{call.lineno}: {name}: {problem}")
    return lines


def test_every_flag_has_help():
    found = flag_offenders()
    print("\n".join(found))
    assert not found, f"{len(found)} flags without help:\n" + "\n".join(found)


def test_the_flag_check_sees_flags_and_their_help(tmp_path):
    tree = ast.parse('flags.DEFINE_string("a", None, "")\n'
                     'flags.DEFINE_enum("b", "x", ["x", "y"], "Which one.")\n'
                     'flags.DEFINE_integer("c", 1, help="Count.")\n'
                     'flags.DEFINE_float("d", 1.0)\n')
    problems = [_help_problem(_help_argument(node.value)) for node in tree.body]
    assert problems == ["empty help", None, None, "no help"]
    # The walk finds the programs' flags and the config fields that become flags.
    found = 0
    for pattern in _FLAG_SOURCES:
        for path in ROOT.glob(pattern):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            uses_option = _uses_option(path, tree)
            found += sum(1 for call in ast.walk(tree) if isinstance(call, ast.Call)
                         and _defines_flags(call, uses_option))
    assert found >= 80
