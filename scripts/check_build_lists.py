#!/usr/bin/env python3
"""Checks that the CMake and meson builds compile the same test sources.

Both builds are walked from the repository root the way their tools walk them (CMake:
add_subdirectory and include of files in the repository; meson: subdir), and every C++/CUDA
source each one compiles or hands to the compiler in a test is collected:

  CMake  literal paths (sources of add_executable, steadyloss_add_test, ...; paths set in a
         variable), calls of a function whose body names `${param}.cpp` (steadyloss_compile_fail),
         and `${case}.cpp` expanded over the file's "case|message" table (compile-fail loops).
  meson  string literals ending in a source extension (optionally joined with `/` to
         meson.current_source_dir() or meson.project_source_root()), and
         `dir / entry[0] + '.cpp'` expanded over the list the `foreach entry : [...]` iterates.

A source reference the script cannot resolve is an error, not a silent omission. Sources under
tests/, tools/, examples/ and bench/ are compared; one built by only one of the two builds fails
the check unless ALLOW_LIST below says why that build alone has it. An allow-list entry that no
longer matches a one-build-only source is reported too (remove it).

Python 3 standard library only. Usage: check_build_lists.py [repository root]; exit status 0
when the lists agree, 1 when they do not, 2 when a build file cannot be read.
"""

import ast
import pathlib
import re
import sys

# Sources (a file, or a folder ending in '/') one build compiles and the other legitimately does
# not; each with its reason.
ALLOW_LIST = {
    # The core compile-fail proofs: ctest runs the compiler and matches its output with
    # PASS_REGULAR_EXPRESSION (the Eigen/xtensor ones also need each backend's CMake target for
    # its include directories); the meson build registers only the step policies' compile-fail
    # cases (tests/stability/compile_fail), which are compared.
    "tests/compile_fail/": ("cmake", "compile-fail proofs registered as ctest regex tests"),
    # nvcc compile checks: CMake finds nvcc; the meson build has no CUDA language set up.
    "tests/cuda/": ("cmake", "nvcc compile checks, CMake only"),
    # LibTorch ships a CMake package only (TorchConfig.cmake, no pkg-config file), so the torch
    # adapter's tests, the c10d test, their CUDA kernels and the torch_tts example are CMake only.
    "tests/torch/": ("cmake", "LibTorch is found through its CMake package only"),
    "examples/torch_tts/": ("cmake", "LibTorch is found through its CMake package only"),
    "examples/speech_tts/speech_tts.cpp": ("cmake", "the speech study trains with LibTorch, found through its CMake package only"),
    # Google Benchmark programs and their ctest smoke runs; bench/run drives a CMake build tree.
    "bench/": ("cmake", "benchmarks are built by CMake only (bench/run uses its build tree)"),
}
# Not compared at all: the consumer tests (tests/consumer) compile their sources from run.sh in
# projects of their own, and tests/gpu is a project of its own run by tests/gpu/run.sh; neither
# is reached from the root build files.

COMPARED_ROOTS = ("tests/", "tools/", "examples/", "bench/")
SOURCE_EXT = r"(?:cpp|cc|cxx|cu)"


class BuildFileError(Exception):
    pass


def relative(root, path):
    return path.resolve().relative_to(root).as_posix()


def line_of(text, index):
    return text.count("\n", 0, index) + 1


# --------------------------------------------------------------------------------------- CMake

def strip_cmake(text):
    """Drops comments and bracket arguments ([[...]], [=[...]=]: inline code, never paths),
    keeping newlines so that line numbers still match the file."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        bracket = re.match(r"#?\[(=*)\[", text[i:])
        if bracket:
            close = "]" + bracket.group(1) + "]"
            end = text.find(close, i + bracket.end())
            end = n if end < 0 else end + len(close)
            out.append("\n" * text.count("\n", i, end))
            i = end
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def cmake_commands(text):
    """(name, [arguments], offset) for every command call of a stripped CMake file."""
    for match in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", text):
        depth, j, start = 1, match.end(), match.end()
        while j < len(text) and depth:
            if text[j] == '"':
                j += 1
                while j < len(text) and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
            elif text[j] == "(":
                depth += 1
            elif text[j] == ")":
                depth -= 1
            j += 1
        body = text[start:j - 1]
        args = [a[1:-1] if a.startswith('"') else a
                for a in re.findall(r'"(?:\\.|[^"\\])*"|[^\s()"]+', body)]
        yield match.group(1).lower(), args, match.start()


def cmake_walk(root):
    """Every CMake file the root CMakeLists.txt reaches, as (path, current source dir)."""
    files, queue = [], [(root / "CMakeLists.txt", root)]
    while queue:
        path, source_dir = queue.pop(0)
        if not path.is_file():
            raise BuildFileError(f"{relative(root, path)}: not found")
        files.append((path, source_dir))
        text = strip_cmake(path.read_text())
        for name, args, _ in cmake_commands(text):
            if name == "add_subdirectory" and args:
                sub = source_dir / args[0]
                queue.append((sub / "CMakeLists.txt", sub))
            elif name == "include" and args:
                target = args[0].replace("${CMAKE_CURRENT_SOURCE_DIR}", str(source_dir)) \
                                .replace("${CMAKE_CURRENT_LIST_DIR}", str(path.parent)) \
                                .replace("${PROJECT_SOURCE_DIR}", str(root))
                candidate = pathlib.Path(target)
                if not candidate.is_absolute():
                    candidate = source_dir / candidate
                if candidate.is_file():  # else a CMake module (GNUInstallDirs, Catch, ...)
                    queue.append((candidate, source_dir))
    return files


def cmake_sources(root):
    walked = cmake_walk(root)
    parsed = [(path, source_dir, strip_cmake(path.read_text())) for path, source_dir in walked]

    # Functions whose body names a source through a parameter: expanded at each call.
    templates = {}
    for path, source_dir, text in parsed:
        for match in re.finditer(r"\bfunction\s*\(\s*(\w+)([^)]*)\)(.*?)\bendfunction\s*\(",
                                 text, re.S | re.I):
            params = match.group(2).split()
            for token in re.findall(r"[^\s()\"]+\." + SOURCE_EXT + r"\b", match.group(3)):
                for k, param in enumerate(params):
                    if "${" + param + "}" in token:
                        templates.setdefault(match.group(1).lower(), []).append((token, k, param))

    found = {}  # source -> first place it is named

    def add(path, text, offset, token, source_dir, variables):
        value = token
        for _ in range(8):  # variables set from other variables
            new = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), value)
            if new == value:
                break
            value = new
        where = f"{relative(root, path)}:{line_of(text, offset)}"
        if value.startswith("\0binary"):
            return  # written into the build tree (a generated probe), not a source
        if "${" in value or "$<" in value:
            raise BuildFileError(f"{where}: cannot resolve the source reference {token!r}")
        source = pathlib.Path(value)
        if not source.is_absolute():
            source = source_dir / source
        if not source.is_file():
            raise BuildFileError(f"{where}: {token!r} names {source}, which does not exist")
        found.setdefault(relative(root, source), where)

    for path, source_dir, text in parsed:
        variables = {"PROJECT_SOURCE_DIR": str(root), "CMAKE_SOURCE_DIR": str(root),
                     "CMAKE_CURRENT_SOURCE_DIR": str(source_dir),
                     "CMAKE_CURRENT_LIST_DIR": str(path.parent),
                     "CMAKE_CURRENT_BINARY_DIR": "\0binary", "PROJECT_BINARY_DIR": "\0binary",
                     "CMAKE_BINARY_DIR": "\0binary"}
        # `get_filename_component(repo ${CMAKE_CURRENT_SOURCE_DIR}/../.. ABSOLUTE)` and plain
        # `set(var value)` are the two ways a file names a folder for later paths.
        tables = {}
        for name, args, _ in cmake_commands(text):
            if name == "set" and len(args) >= 2:
                if all("|" in a for a in args[1:]):
                    tables[args[0]] = [a.split("|", 1)[0] for a in args[1:]]
                elif len(args) == 2:
                    variables.setdefault(args[0], args[1])
        loops = {}  # loop variable -> table, for `foreach(entry IN LISTS table)` + list(GET ...)
        for name, args, _ in cmake_commands(text):
            if name == "foreach" and len(args) == 4 and args[1:3] == ["IN", "LISTS"] \
                    and args[3] in tables:
                loops[args[0]] = tables[args[3]]
            elif name == "list" and len(args) == 4 and args[0] == "GET" and args[2] == "0":
                # list(GET parts 0 case): `case` is the first field of the table's entry
                if loops:
                    loops[args[3]] = next(iter(loops.values()))

        in_function = [(m.start(), m.end()) for m in
                       re.finditer(r"\bfunction\s*\(.*?\bendfunction\s*\(", text, re.S | re.I)]
        for name, args, offset in cmake_commands(text):
            if name in ("function", "endfunction"):
                continue
            inside = any(start <= offset < end for start, end in in_function)
            if name in templates and not inside:
                for token, k, param in templates[name]:
                    if k < len(args):
                        add(path, text, offset, token.replace("${" + param + "}", args[k]),
                            source_dir, variables)
            if name == "set" and len(args) == 2 and args[0] in variables:
                continue  # the value is looked at where the variable is used
            for arg in args:
                if not re.search(r"\." + SOURCE_EXT + r"$", arg):
                    continue
                if inside:
                    continue  # a function's own paths: expanded at its calls
                loop_vars = [v for v in re.findall(r"\$\{(\w+)\}", arg) if v in loops]
                if loop_vars:
                    for case in loops[loop_vars[0]]:
                        add(path, text, offset, arg.replace("${" + loop_vars[0] + "}", case),
                            source_dir, variables)
                else:
                    add(path, text, offset, arg, source_dir, variables)
        # a `set(var path.cpp)` used later: pick up the values that name sources
        for name, args, offset in cmake_commands(text):
            if name == "set" and len(args) == 2 and re.search(r"\." + SOURCE_EXT + r"$", args[1]):
                add(path, text, offset, args[1], source_dir, variables)
    return found


# --------------------------------------------------------------------------------------- meson

def strip_meson(text):
    """Drops comments and multi-line strings ('''...''': inline code, never paths), keeping
    newlines so that line numbers still match the file."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("'''", i):
            end = text.find("'''", i + 3)
            end = n if end < 0 else end + 3
            out.append("''" + "\n" * text.count("\n", i, end))
            i = end
        elif text[i] == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text[i] == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def meson_walk(root):
    files, queue = [], [root / "meson.build"]
    while queue:
        path = queue.pop(0)
        if not path.is_file():
            raise BuildFileError(f"{relative(root, path)}: not found")
        files.append(path)
        for match in re.finditer(r"\bsubdir\s*\(\s*'([^']+)'", strip_meson(path.read_text())):
            queue.append(path.parent / match.group(1) / "meson.build")
    return files


def bracket_end(text, start):
    depth, j = 0, start
    while j < len(text):
        if text[j] == "'":
            j = text.find("'", j + 1)
        elif text[j] == "[":
            depth += 1
        elif text[j] == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ValueError("unbalanced [")


def meson_sources(root):
    found = {}
    bases = {"current_source_dir": None, "project_source_root": root, "global_source_root": root}
    for path in meson_walk(root):
        text = strip_meson(path.read_text())
        where = lambda offset: f"{relative(root, path)}:{line_of(text, offset)}"

        def add(offset, base, parts):
            source = (base or path.parent).joinpath(*parts)
            if not source.is_file():
                raise BuildFileError(f"{where(offset)}: {'/'.join(parts)!r} names {source}, "
                                     "which does not exist")
            found.setdefault(relative(root, source), where(offset))

        covered = set()
        # dir / 'a' / entry[0] + '.cpp' inside `foreach entry : [[...], ...]`
        template = (r"meson\.(\w+)\(\)\s*/\s*((?:'[^']*'\s*/\s*)*)(\w+)\[0\]\s*\+\s*'(\."
                    + SOURCE_EXT + r")'")
        for match in re.finditer(template, text):
            loops = list(re.finditer(r"\bforeach\s+" + match.group(3) + r"\s*:\s*\[",
                                     text[:match.start()]))
            if not loops or match.group(1) not in bases:
                raise BuildFileError(f"{where(match.start())}: cannot resolve {match.group(0)!r}")
            loop = loops[-1]  # the innermost loop over that variable
            start = loop.end() - 1
            entries = ast.literal_eval(text[start:bracket_end(text, start)])
            parts = re.findall(r"'([^']*)'", match.group(2))
            for entry in entries:
                add(match.start(), bases[match.group(1)], parts + [entry[0] + match.group(4)])
            covered.add(match.end() - 1)
        # literal sources, optionally joined to a source root
        literal = (r"(?:meson\.(\w+)\(\)\s*/\s*)?((?:'[^']*'\s*/\s*)*)'([^']*\."
                   + SOURCE_EXT + r")'")
        for match in re.finditer(literal, text):
            if match.end() - 1 in covered:
                continue  # the '.cpp' of a template above
            if match.group(1) and match.group(1) not in bases:
                raise BuildFileError(f"{where(match.start())}: cannot resolve {match.group(0)!r}")
            parts = re.findall(r"'([^']*)'", match.group(2)) + [match.group(3)]
            add(match.start(), bases.get(match.group(1)), parts)
            covered.add(match.end() - 1)
        for match in re.finditer(r"\." + SOURCE_EXT + r"'", text):
            if match.end() - 1 not in covered:
                raise BuildFileError(f"{where(match.start())}: a source reference this script "
                                     "does not recognize")
    return found


# ---------------------------------------------------------------------------------------- main

def allowed(source):
    for entry, (build, reason) in ALLOW_LIST.items():
        if source == entry or (entry.endswith("/") and source.startswith(entry)):
            return entry, build, reason
    return None


def main(argv):
    root = pathlib.Path(argv[1] if len(argv) > 1 else pathlib.Path(__file__).parent / "..").resolve()
    try:
        builds = {"cmake": cmake_sources(root), "meson": meson_sources(root)}
    except BuildFileError as error:
        print(f"check_build_lists: {error}", file=sys.stderr)
        return 2
    compared = {name: {s: w for s, w in found.items() if s.startswith(COMPARED_ROOTS)}
                for name, found in builds.items()}
    problems, used = [], set()
    for build, other in (("cmake", "meson"), ("meson", "cmake")):
        for source in sorted(set(compared[build]) - set(compared[other])):
            hit = allowed(source)
            if hit and hit[1] == build:
                used.add(hit[0])
                continue
            problems.append(f"  {source}: compiled by {build} only ({compared[build][source]}), "
                            f"not by {other}")
    stale = [f"  {entry}: matches no {build}-only source; remove it from ALLOW_LIST"
             for entry, (build, _) in ALLOW_LIST.items() if entry not in used]
    both = sorted(set(compared["cmake"]) & set(compared["meson"]))
    print(f"check_build_lists: {len(both)} sources in both builds, "
          f"{len(compared['cmake']) - len(both)} CMake only, "
          f"{len(compared['meson']) - len(both)} meson only")
    for entry in sorted(used):
        print(f"  allowed: {entry} ({ALLOW_LIST[entry][0]} only: {ALLOW_LIST[entry][1]})")
    if problems or stale:
        if problems:
            print("check_build_lists: the CMake and meson builds disagree:")
            print("\n".join(problems))
            print("Register the source in the other build, or add it to ALLOW_LIST in "
                  "scripts/check_build_lists.py with the reason only one build has it.")
        if stale:
            print("check_build_lists: stale ALLOW_LIST entries:")
            print("\n".join(stale))
        return 1
    print("check_build_lists: the builds agree")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
