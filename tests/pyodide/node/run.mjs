// Runs pytest inside Pyodide under Node, with fake-indexeddb as the global indexedDB.
//
// Usage (tests/pyodide/test_in_pyodide.py builds the config and runs this):
//   node --experimental-wasm-stack-switching --experimental-websocket run.mjs CONFIG.json
//
// CONFIG.json:
//   wheels      paths of wheels to install into site-packages (plasma_nb's pure wheel)
//   files       {"<path inside Pyodide>": "<host path>"}: test-only packages (pytest, ...)
//   sysPath     directories to put first on sys.path inside Pyodide
//   mounts      {"<path inside Pyodide>": "<host directory>"}: mounted read-only in spirit
//               (NODEFS writes through; the runner disables bytecode writing)
//   pytestArgs  arguments for pytest.main inside Pyodide
//   env         environment variables for the Python side
//   runner      the Python file that runs pytest (tests/pyodide/inside/runner.py)
//   report      where to write the JSON report (one entry per test)
//
// Exit status: 0 all selected tests passed, 1 some failed, 2 the harness itself failed.
// Every line the Python side prints goes to this process's stdout/stderr.

import "fake-indexeddb/auto";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { loadPyodide } from "pyodide";

const started = performance.now();
const ms = () => Math.round(performance.now() - started);
const log = (msg) => process.stderr.write(`[pyodide-harness +${ms()}ms] ${msg}\n`);

// Web Locks for Node, which lacks navigator.locks (Node 20): exclusive locks granted in
// request order, held until the callback's promise settles; `ifAvailable` answers null
// at once when the lock is held. Enough for plasma_nb's IndexedDB backend, which
// serializes the writes of tabs (here: Pyodide instances) with one lock per database.
function installWebLocks() {
  if (globalThis.navigator && globalThis.navigator.locks) return;
  const queues = new Map();
  const locks = {
    request(name, options, callback) {
      if (typeof options === "function") { callback = options; options = {}; }
      let queue = queues.get(name);
      if (!queue) { queue = []; queues.set(name, queue); }
      if (options.ifAvailable && queue.length) return Promise.resolve().then(() => callback(null));
      return new Promise((resolve, reject) => {
        const run = () => {
          let result;
          try { result = Promise.resolve(callback({ name, mode: "exclusive" })); }
          catch (err) { result = Promise.reject(err); }
          result.then(resolve, reject).finally(() => {
            queue.shift();
            if (queue.length) queue[0]();
            else queues.delete(name);
          });
        };
        queue.push(run);
        if (queue.length === 1) run();
      });
    },
  };
  if (globalThis.navigator) Object.defineProperty(globalThis.navigator, "locks", { value: locks });
  else globalThis.navigator = { userAgent: `Node.js/${process.versions.node}`, locks };
}

// One Pyodide with plasma_nb's wheel installed: the one that runs pytest, and the peers
// that tests start with `js.plasmaBootPeer()` (two tabs sharing one fake IndexedDB).
async function boot(config, quiet) {
  const py = await loadPyodide({
    enableRunUntilComplete: true,
    env: { HOME: "/home/pyodide", ...(config.env || {}) },
  });
  py.setStdout({ write: (buf) => { process.stdout.write(buf); return buf.length; } });
  py.setStderr({ write: (buf) => { process.stderr.write(buf); return buf.length; } });
  const sitePackages = py.runPython("import site; site.getsitepackages()[0]");
  for (const wheel of config.wheels || []) {
    py.unpackArchive(new Uint8Array(readFileSync(wheel)), "wheel", { extractDir: sitePackages });
    if (!quiet) log(`installed ${wheel}`);
  }
  return py;
}

async function main() {
  const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
  if (typeof globalThis.indexedDB === "undefined") throw new Error("fake-indexeddb did not install");
  installWebLocks();
  globalThis.plasmaBootPeer = async () => {
    const peer = await boot(config, true);
    log("peer pyodide booted");
    return peer;
  };

  const py = await loadPyodide({
    // Needed so that asyncio.Runner / run_until_complete work inside pytest (JSPI, run_sync).
    enableRunUntilComplete: true,
    env: { HOME: "/home/pyodide", ...(config.env || {}) },
  });
  // Unbuffered, byte for byte: pytest's progress lines arrive in pieces.
  py.setStdout({ write: (buf) => { process.stdout.write(buf); return buf.length; } });
  py.setStderr({ write: (buf) => { process.stderr.write(buf); return buf.length; } });
  log(`pyodide ${py.version} loaded`);

  const sitePackages = py.runPython("import site; site.getsitepackages()[0]");
  for (const wheel of config.wheels || []) {
    // A wheel is a zip laid out for site-packages; unpackArchive installs it as micropip
    // would, minus dependency resolution (checked by a test inside Pyodide instead).
    py.unpackArchive(new Uint8Array(readFileSync(wheel)), "wheel", { extractDir: sitePackages });
    log(`installed ${wheel}`);
  }
  for (const [dest, src] of Object.entries(config.files || {})) {
    py.FS.mkdirTree(dirname(dest));
    py.FS.writeFile(dest, readFileSync(src));
  }
  for (const [dest, src] of Object.entries(config.mounts || {})) {
    py.FS.mkdirTree(dest);
    py.mountNodeFS(dest, src);
  }
  py.globals.set("_harness_config", py.toPy(config));
  log("files in place; running pytest");

  const result = await py.runPythonAsync(readFileSync(config.runner, "utf8"), { filename: config.runner });
  const report = JSON.parse(result);
  report.harness_ms = ms();
  if (config.report) writeFileSync(config.report, JSON.stringify(report, null, 2));

  const counts = {};
  for (const t of report.tests) counts[t.outcome] = (counts[t.outcome] || 0) + 1;
  log(`pytest exit code ${report.exitcode}; ${JSON.stringify(counts)}`);
  return report.exitcode === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`harness error: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
