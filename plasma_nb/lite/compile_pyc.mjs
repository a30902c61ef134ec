// Compile Python sources to Python 3.14 bytecode with Pyodide itself (the host's
// CPython is another version and cannot write 3.14 .pyc files).
//
// Usage: node compile_pyc.mjs PYODIDE_DIR WORK_DIR
//   PYODIDE_DIR  the npm package `pyodide` (pyodide.mjs, the wasm, the stdlib)
//   WORK_DIR     wheels/<n>/  one unpacked wheel each: __pycache__/*.cpython-314.pyc
//                             files are written next to the sources;
//                stdlib/      the unpacked python_stdlib.zip (optional): X.pyc next to
//                             X.py, the layout zipimport reads.
// All are unchecked-hash pycs: never revalidated against the .py (that is what makes
// them fast to import), with the file names they will have in Pyodide.
//
// Prints one JSON line: {"cache_tag": "...", "site": "...", "stdlib": "...", "failed": [...]}.

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [pyodideDir, workDir] = process.argv.slice(2);
if (!pyodideDir || !workDir) {
  process.stderr.write("usage: node compile_pyc.mjs PYODIDE_DIR WORK_DIR\n");
  process.exit(2);
}
const indexURL = resolve(pyodideDir) + "/";
const { loadPyodide } = await import(pathToFileURL(indexURL + "pyodide.mjs").href);
const py = await loadPyodide({
  indexURL,
  stdout: () => {},
  stderr: (s) => process.stderr.write(s + "\n"),
});
py.FS.mkdirTree("/work");
py.mountNodeFS("/work", resolve(workDir));
py.globals.set("has_stdlib", existsSync(resolve(workDir, "stdlib")));
const result = py.runPython(`
import compileall, contextlib, io, json, os, py_compile, site, sys

mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
sp = site.getsitepackages()[0]
stdlib_zip = next(p for p in sys.path if p.endswith(".zip"))
failed = []

def compile_tree(name, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ok = compileall.compile_dir(f"/work/{name}", quiet=1, workers=1,
                                    invalidation_mode=mode, **kwargs)
    if not ok:
        failed.append({"tree": name, "output": out.getvalue()[-2000:]})

if os.path.isdir("/work/wheels"):
    for name in sorted(os.listdir("/work/wheels")):
        compile_tree(f"wheels/{name}", ddir=sp)
if has_stdlib:
    compile_tree("stdlib", ddir=stdlib_zip, legacy=True)
json.dumps({"cache_tag": sys.implementation.cache_tag, "site": sp, "stdlib": stdlib_zip,
            "failed": failed})
`);
process.stdout.write(result + "\n");
