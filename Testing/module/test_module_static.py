"""Static checks of the Slicer module and the extension packaging (no Slicer needed).

A Slicer module fails in ways that only show inside the application or after packaging: a widget name
typo in the code raises when the panel opens, a widget bound to no parameter silently does nothing, a
selector without the scene lists no nodes, and a file missing from a CMakeLists.txt works from the source
tree but is left out of the extension package. These tests read the .ui, the module code, the
CMakeLists.txt files and the Extensions Index entry and check them against each other and the disk.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO_ROOT

MODULE_DIR = REPO_ROOT / "DiscAnalysis"
LIB_DIR = REPO_ROOT / "DiscAnalysisLib"
SHIPPED_RESOURCES_DIR = REPO_ROOT / "Resources"
UI_FILES = sorted((MODULE_DIR / "Resources" / "UI").glob("*.ui"))

# Widgets that only lay out or label others; every other named widget in a .ui is an input or an output
# and must be used (referenced in code or bound to a parameter).
PASSIVE_WIDGET_CLASSES = {
    "QWidget",
    "QLabel",
    "QFrame",
    "Line",
    "QGroupBox",
    "QScrollArea",
    "QSplitter",
    "QStackedWidget",
    "QTabWidget",
    "QToolBox",
    "ctkCollapsibleButton",
    "ctkCollapsibleGroupBox",
    "qMRMLWidget",
}
# Widgets that list nodes of the scene: they need the top-level widget's mrmlSceneChanged signal.
SCENE_LISTING_CLASSES = {
    "qMRMLNodeComboBox",
    "qMRMLCheckableNodeComboBox",
    "qMRMLSubjectHierarchyComboBox",
    "qMRMLSubjectHierarchyTreeView",
    "qMRMLSegmentSelectorWidget",
    "qMRMLTreeView",
}
CATALOG_SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
# Properties of slicer-extension-catalog-entry-schema-v1.0.1.json ("additionalProperties": false) and the
# Python type each must have; "required" lists $schema, category, scm_url.
CATALOG_PROPERTIES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


# ------------------------------------------------------------------------------------------- helpers
def _files_under(folder: Path) -> set[str]:
    """Files below ``folder`` (POSIX paths relative to it), without caches and the CMakeLists.txt itself."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and p.name != "CMakeLists.txt"
    }


def _cmake_tokens(text: str) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Commands of a CMake file as (lower-case name, [(argument, quoted), ...]); comments dropped."""
    commands = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        else:
            m = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(").match(text, i)
            assert m, f"cannot parse CMake near: {text[i:i + 60]!r}"
            name, i = m.group(1).lower(), m.end()
            args: list[tuple[str, bool]] = []
            depth = 0
            while True:
                c = text[i]
                if c.isspace():
                    i += 1
                elif c == "#":
                    while text[i] != "\n":
                        i += 1
                elif c == '"':
                    j = i + 1
                    while text[j] != '"':
                        j += 2 if text[j] == "\\" else 1
                    args.append((text[i + 1 : j], True))
                    i = j + 1
                elif c == "(":
                    depth += 1
                    args.append(("(", False))
                    i += 1
                elif c == ")":
                    i += 1
                    if depth == 0:
                        break
                    depth -= 1
                    args.append((")", False))
                else:
                    m = re.compile(r'[^\s()#"]+').match(text, i)
                    args.append((m.group(0), False))
                    i = m.end()
            commands.append((name, args))
    return commands


def _cmake_commands(path: Path) -> tuple[list[tuple[str, list[str]]], dict[str, list[str]]]:
    """Commands of ``path`` with ``${VAR}`` of variables set in the file expanded (unknown ones kept as
    written), and the variables themselves. Unquoted list variables expand into several arguments."""
    variables: dict[str, list[str]] = {}

    def expand(arg: str, quoted: bool) -> list[str]:
        value = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [m.group(0)])), arg)
        if quoted:
            return [value]
        return [v for v in value.split(";") if v]

    commands = []
    for name, raw_args in _cmake_tokens(path.read_text()):
        args = [a for arg, quoted in raw_args for a in expand(arg, quoted)]
        if name == "set" and args:
            variables[args[0]] = args[1:]
        commands.append((name, args))
    return commands, variables


def _keyword_args(args: list[str], keywords: set[str]) -> dict[str, list[str]]:
    """Split a macro call's arguments at its keywords (options map to an empty list)."""
    out: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if arg in keywords:
            current = arg
            out[current] = []
        elif current is not None:
            out[current].extend(v for v in arg.split(";") if v)  # a quoted "${LIST}" is one argument
    return out


def _module_python_files() -> list[Path]:
    return sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _ui_references_in_code() -> dict[str, set[str]]:
    """``self.ui.<name>`` and ``ui.<name>`` attributes used in the module code: name -> files."""
    found: dict[str, set[str]] = {}
    for path in _module_python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "ui") or (
                isinstance(owner, ast.Name) and owner.id == "ui"
            ):
                found.setdefault(node.attr, set()).add(path.name)
    return found


def _parameter_node_fields() -> set[str]:
    """Parameter names declared in the module's @parameterNodeWrapper classes."""
    fields = set()
    for path in _module_python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            decorators = {ast.unparse(d).split("(")[0].split(".")[-1] for d in node.decorator_list}
            if "parameterNodeWrapper" in decorators:
                fields |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return fields


def _ui_widgets(ui_file: Path) -> tuple[ET.Element, list[ET.Element]]:
    root = ET.parse(ui_file).getroot()
    top = root.find("widget")
    return top, list(top.iter("widget"))


def _parameter_name(widget: ET.Element) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.findtext("string")
    return None


# ---------------------------------------------------------------------------------- module and .ui
#: The Slicer modules of the folder: every top-level .py (Slicer loads each one as a module).
MODULE_NAMES = sorted(p.stem for p in MODULE_DIR.glob("*.py"))


def test_each_module_has_its_ui_file():
    assert "DiscAnalysis" in MODULE_NAMES
    assert sorted(p.stem for p in UI_FILES) == MODULE_NAMES, "one Resources/UI/<Module>.ui per module, and no other"
    for name in MODULE_NAMES:
        code = (MODULE_DIR / f"{name}.py").read_text()
        loaded = re.findall(r'resourcePath\(\s*["\']UI/([^"\']+)["\']\s*\)', code)
        assert loaded == [f"{name}.ui"], f"{name}.py should load UI/{name}.ui, loads {loaded}"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_ui_top_level_widget_is_a_qmrmlwidget(ui_file):
    top, _ = _ui_widgets(ui_file)
    assert top.get("class") == "qMRMLWidget", "slicer.util.loadUI + setMRMLScene need a qMRMLWidget root"


def test_every_ui_name_used_in_code_exists_in_the_ui():
    names = {w.get("name") for ui_file in UI_FILES for w in _ui_widgets(ui_file)[1]}
    missing = {name: sorted(files) for name, files in _ui_references_in_code().items() if name not in names}
    assert not missing, f"code uses widgets that no .ui defines (AttributeError when the panel opens): {missing}"


def test_every_input_or_output_widget_is_used():
    used_in_code = set(_ui_references_in_code())
    fields = _parameter_node_fields()
    unused = []
    for ui_file in UI_FILES:
        for widget in _ui_widgets(ui_file)[1]:
            if widget.get("class") in PASSIVE_WIDGET_CLASSES:
                continue
            if widget.get("name") in used_in_code or _parameter_name(widget) in fields:
                continue
            unused.append(f"{ui_file.name}:{widget.get('name')} ({widget.get('class')})")
    assert not unused, f"widgets neither used in code nor bound to a parameter (dead controls): {unused}"


def test_every_bound_widget_names_a_declared_parameter():
    fields = _parameter_node_fields()
    assert fields, "no @parameterNodeWrapper class found in the module code"
    wrong = [
        f"{ui_file.name}:{w.get('name')} -> {_parameter_name(w)!r}"
        for ui_file in UI_FILES
        for w in _ui_widgets(ui_file)[1]
        if _parameter_name(w) is not None and _parameter_name(w) not in fields
    ]
    assert not wrong, f"SlicerParameterName values that the parameter node does not declare: {wrong} (declared: {sorted(fields)})"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_node_selectors_receive_the_scene(ui_file):
    top, widgets = _ui_widgets(ui_file)
    root = ET.parse(ui_file).getroot()
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("sender") == top.get("name")
        and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    missing = [w.get("name") for w in widgets if w.get("class") in SCENE_LISTING_CLASSES and w.get("name") not in receivers]
    assert not missing, f"selectors not connected to mrmlSceneChanged (they would list no nodes): {missing}"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_custom_widgets_are_declared(ui_file):
    root = ET.parse(ui_file).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    undeclared = sorted(c for c in used if not c.startswith("Q") and c != "Line" and c not in declared)
    assert not undeclared, f"classes used without a <customwidget> entry: {undeclared}"


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_classes_follow_slicer_naming(name):
    tree = ast.parse((MODULE_DIR / f"{name}.py").read_text())
    bases = {n.name: {ast.unparse(b) for b in n.bases} for n in tree.body if isinstance(n, ast.ClassDef)}
    assert "ScriptedLoadableModule" in bases.get(name, set())
    assert "ScriptedLoadableModuleWidget" in bases.get(f"{name}Widget", set())
    assert "ScriptedLoadableModuleLogic" in bases.get(f"{name}Logic", set())
    assert "ScriptedLoadableModuleTest" in bases.get(f"{name}Test", set())


#: Functions of DiscAnalysisModuleLib that run only inside the Slicer application: the default installer of
#: dependencies.py, and BackgroundCliRun.start, which creates the QProcess both modules share.
SLICER_APP_FUNCTIONS = {("dependencies.py", "_pipInstall"), ("backgroundrun.py", "start")}


def test_only_the_module_layer_imports_qt():
    """qt/ctk/slicer.app belong to DiscAnalysis.py; DiscAnalysisModuleLib must run on slicer-core."""
    offenders = []
    for path in _module_python_files():
        if path.parent == MODULE_DIR:
            continue
        tree = ast.parse(path.read_text())
        # The exceptions (SLICER_APP_FUNCTIONS): the default installer of dependencies.py, called only inside
        # the Slicer application when a step's packages are missing (tests inject their own installer; it falls
        # back to slicer.util.pip_install on Slicer releases without slicer.packaging.pip_ensure), and the
        # QProcess of the shared background runner.
        exempt = {
            line
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and (path.name, f.name) in SLICER_APP_FUNCTIONS
            for line in range(f.lineno, f.end_lineno + 1)
        }
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in exempt:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: import {n}" for n in names if n.split(".")[0] in ("qt", "ctk")]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "slicer"
                and node.attr in ("app", "mrmlScene", "modules", "util")
            ):
                offenders.append(f"{path.name}:{node.lineno}: slicer.{node.attr}")
    assert not offenders, offenders


# ---------------------------------------------------------------------------------------- packaging
def test_both_modules_use_the_shared_background_runner():
    """One QProcess runner (DiscAnalysisModuleLib.backgroundrun) for every long step of both modules."""
    for name in ("DiscAnalysis.py", "DiscCohort.py"):
        text = (MODULE_DIR / name).read_text()
        assert "BackgroundCliRun(" in text, name
        assert "QProcess" not in text, f"{name} builds its own QProcess"


def test_module_cmake_lists_every_script_and_resource():
    commands, variables = _cmake_commands(MODULE_DIR / "CMakeLists.txt")
    scripts = variables["MODULE_PYTHON_SCRIPTS"]
    resources = variables["MODULE_PYTHON_RESOURCES"]
    on_disk = _files_under(MODULE_DIR)
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "a file is listed twice"
    assert set(scripts) == {f for f in on_disk if f.endswith(".py")}, (
        "DiscAnalysis/CMakeLists.txt MODULE_PYTHON_SCRIPTS and the .py files on disk differ: "
        f"unlisted {sorted({f for f in on_disk if f.endswith('.py')} - set(scripts))}, "
        f"missing {sorted(set(scripts) - on_disk)}"
    )
    assert set(resources) == {f for f in on_disk if not f.endswith(".py")}, (
        "DiscAnalysis/CMakeLists.txt MODULE_PYTHON_RESOURCES and the resource files on disk differ: "
        f"unlisted {sorted({f for f in on_disk if not f.endswith('.py')} - set(resources))}, "
        f"missing {sorted(set(resources) - on_disk)}"
    )
    build = [args for name, args in commands if name == "slicermacrobuildscriptedmodule"]
    assert len(build) == 1
    build_args = _keyword_args(build[0], {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR"})
    assert build_args["NAME"] == ["DiscAnalysis"]
    assert build_args["SCRIPTS"] == scripts and build_args["RESOURCES"] == resources


def test_module_cmake_registers_the_self_test():
    commands, _ = _cmake_commands(MODULE_DIR / "CMakeLists.txt")
    start = commands.index(("if", ["BUILD_TESTING"]))
    block = commands[start + 1 : commands.index(("endif", []), start)]
    for name in MODULE_NAMES:
        assert ("slicer_add_python_unittest", ["SCRIPT", f"{name}.py"]) in block, f"{name}.py self-test not registered"


def test_module_top_level_scripts_are_modules():
    """Slicer loads every top-level .py of a module folder as a module: each must define one."""
    for path in sorted(MODULE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        classes = {n.name: {ast.unparse(b) for b in n.bases} for n in tree.body if isinstance(n, ast.ClassDef)}
        assert "ScriptedLoadableModule" in classes.get(path.stem, set()), (
            f"{path.name} defines no class {path.stem}(ScriptedLoadableModule); Slicer would fail to load it as a "
            "module. Put helpers in DiscAnalysisModuleLib/."
        )


@pytest.mark.parametrize("package_root", [MODULE_DIR, LIB_DIR], ids=lambda p: p.name)
def test_every_python_folder_is_a_package(package_root):
    folders = {p.parent for p in package_root.rglob("*.py") if "__pycache__" not in p.parts} - {MODULE_DIR}
    missing = sorted(str(f.relative_to(REPO_ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders with Python files but no __init__.py: {missing}"


def test_lib_cmake_lists_every_python_file():
    commands, variables = _cmake_commands(LIB_DIR / "CMakeLists.txt")
    scripts = variables["DiscAnalysisLib_PYTHON_SCRIPTS"]
    resources = variables["DiscAnalysisLib_PYTHON_RESOURCES"]
    on_disk = _files_under(LIB_DIR)
    assert len(scripts) == len(set(scripts)), "a file is listed twice"
    unlisted = sorted({f for f in on_disk if f.endswith(".py")} - set(scripts))
    missing = sorted(set(scripts) - on_disk)
    assert not unlisted, f"DiscAnalysisLib .py files not listed in DiscAnalysisLib/CMakeLists.txt (not packaged): {unlisted}"
    assert not missing, f"DiscAnalysisLib/CMakeLists.txt lists files that do not exist (the build fails): {missing}"
    assert set(resources) == {f for f in on_disk if not f.endswith(".py")}, (
        f"DiscAnalysisLib_PYTHON_RESOURCES {sorted(resources)} and the non-Python files on disk differ"
    )


def test_lib_is_installed_as_one_package_folder():
    commands, variables = _cmake_commands(LIB_DIR / "CMakeLists.txt")
    calls = [args for name, args in commands if name == "ctkmacrocompilepythonscript"]
    assert len(calls) == 1
    args = _keyword_args(
        calls[0],
        {"TARGET_NAME", "SCRIPTS", "RESOURCES", "SOURCE_DIR", "DESTINATION_DIR", "INSTALL_DIR", "NO_INSTALL_SUBDIR", "GLOBAL_TARGET"},
    )
    # Target names become Copy<name>PythonScriptFiles; the module's build macro already uses "DiscAnalysis".
    assert args["TARGET_NAME"] == ["DiscAnalysisLib"]
    assert args["SCRIPTS"] == variables["DiscAnalysisLib_PYTHON_SCRIPTS"]
    assert "SOURCE_DIR" not in args, "scripts are listed relative to DiscAnalysisLib/"
    assert args["DESTINATION_DIR"] == ["${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/DiscAnalysisLib"]
    # install(DIRECTORY <dest>) installs the folder itself; with NO_INSTALL_SUBDIR (<dest>/) only its content.
    if "NO_INSTALL_SUBDIR" in args:
        assert args["INSTALL_DIR"] == ["${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/DiscAnalysisLib"]
    else:
        assert args["INSTALL_DIR"] == ["${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"], (
            "without NO_INSTALL_SUBDIR the package would be installed as DiscAnalysisLib/DiscAnalysisLib"
        )


def test_shipped_resources_are_listed():
    """DiscAnalysisLib.resources finds Resources/ next to the package; every file there must be installed."""
    _, variables = _cmake_commands(LIB_DIR / "CMakeLists.txt")
    listed = variables["DiscAnalysis_SHIPPED_RESOURCES"]
    on_disk = {p.relative_to(SHIPPED_RESOURCES_DIR).as_posix() for p in SHIPPED_RESOURCES_DIR.rglob("*") if p.is_file()}
    assert set(listed) == on_disk, (
        f"Resources/ files not listed in DiscAnalysisLib/CMakeLists.txt: {sorted(on_disk - set(listed))}; "
        f"listed but absent: {sorted(set(listed) - on_disk)}"
    )


def _extension_metadata() -> tuple[list[tuple[str, list[str]]], dict[str, list[str]]]:
    return _cmake_commands(REPO_ROOT / "CMakeLists.txt")


def test_top_level_cmake_is_a_slicer_extension():
    commands, variables = _extension_metadata()
    names = [name for name, _ in commands]
    assert names[0] == "cmake_minimum_required"
    assert ("project", ["DiscAnalysis"]) in commands
    assert variables["EXTENSION_CATEGORY"] == ["Quantification"]
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL"):
        assert variables.get(key, [""])[0].strip(), f"{key} is empty"
    assert "EXTENSION_SCREENSHOTURLS" in variables
    assert "PyTorch" in variables["EXTENSION_DEPENDS"]

    order = [
        ("find_package", ["Slicer", "REQUIRED"]),
        ("include", ["${Slicer_USE_FILE}"]),
        ("add_subdirectory", ["DiscAnalysis"]),
        ("add_subdirectory", ["DiscAnalysisLib"]),
        ("include", ["${Slicer_EXTENSION_GENERATE_CONFIG}"]),
        ("include", ["${Slicer_EXTENSION_CPACK}"]),
    ]
    positions = [commands.index(c) if c in commands else None for c in order]
    assert None not in positions, f"missing: {[c for c, p in zip(order, positions, strict=True) if p is None]}"
    assert positions == sorted(positions), "extension commands out of order"
    assert commands[-1] == ("include", ["${Slicer_EXTENSION_CPACK}"]), "the CPack include must come last"
    for name, args in commands:
        if name == "add_subdirectory":
            assert (REPO_ROOT / args[0] / "CMakeLists.txt").is_file(), f"add_subdirectory({args[0]}) has no CMakeLists.txt"


def _repository_file(url: str, homepage: str) -> Path:
    """The file of this repository that a raw GitHub URL of the extension's repository names."""
    owner_repo = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", homepage)
    assert owner_repo, f"EXTENSION_HOMEPAGE {homepage} is not a GitHub repository URL"
    repo = re.escape(owner_repo.group(1))
    m = re.fullmatch(rf"https://raw\.githubusercontent\.com/{repo}/[^/]+/(.+)", url) or re.fullmatch(
        rf"https://github\.com/{repo}/raw/[^/]+/(.+)", url
    )
    assert m, f"{url} is not a raw file URL of {homepage}"
    return REPO_ROOT / m.group(1)


def test_icon_and_screenshot_urls_name_files_of_this_repository():
    _, variables = _extension_metadata()
    homepage = variables["EXTENSION_HOMEPAGE"][0]
    icon = _repository_file(variables["EXTENSION_ICONURL"][0], homepage)
    assert icon == MODULE_DIR / "Resources" / "Icons" / "DiscAnalysis.png"
    for url in " ".join(variables["EXTENSION_SCREENSHOTURLS"]).split():
        assert _repository_file(url, homepage).is_file(), f"screenshot {url} is not in the repository"


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "DiscAnalysis.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_extensions_index_entry():
    entry = json.loads((REPO_ROOT / "DiscAnalysis.json").read_text())
    assert CATALOG_REQUIRED <= set(entry), f"missing required keys {CATALOG_REQUIRED - set(entry)}"
    assert set(entry) <= set(CATALOG_PROPERTIES), f"keys the schema does not allow: {set(entry) - set(CATALOG_PROPERTIES)}"
    for key, value in entry.items():
        assert type(value) is CATALOG_PROPERTIES[key], f"{key} must be {CATALOG_PROPERTIES[key].__name__}"
    assert entry["$schema"] == CATALOG_SCHEMA_URL
    assert entry.get("tier", 5) in (1, 3, 5)
    assert entry.get("scm_type", "git") in ("git", "local")
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("build_subdirectory", ".") == "."

    _, variables = _extension_metadata()
    assert entry["category"] == variables["EXTENSION_CATEGORY"][0]
    assert entry["scm_url"].removesuffix(".git") == variables["EXTENSION_HOMEPAGE"][0]
    depends = {d for v in variables["EXTENSION_DEPENDS"] for d in v.split() if d != "NA"}
    assert set(entry.get("build_dependencies", [])) == depends, "build_dependencies and EXTENSION_DEPENDS differ"
