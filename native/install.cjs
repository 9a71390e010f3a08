// The package's install script. The native oneDNN engine is optional: it is built when Debian's libdnnl-dev is
// present (else ONNX Runtime serves, and the library says how to enable the native engine), and not rebuilt
// when build/Release/mnv2.node is already newer than its sources (so `npx mnv2` in a clone starts at once).
//
// It also keeps onnxruntime-node's postinstall from downloading its CUDA provider from NuGet (~1 GB, and
// fatal on a machine that reaches only the npm registry): install scripts of all packages run before any
// postinstall, and onnxruntime-node skips the download when the files it would fetch exist. We create them
// empty unless the user chose (ONNXRUNTIME_NODE_INSTALL=cuda12 forces the real download, or later
// `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..');
const HEADER = '/usr/include/oneapi/dnnl/dnnl.hpp';
const ADDON = path.join(ROOT, 'build', 'Release', 'mnv2.node');
const SOURCES = [path.join(__dirname, 'mnv2.cc'), path.join(ROOT, 'binding.gyp')];
const ENABLE = 'apt-get install -y libdnnl-dev g++ make, then npm rebuild mobilenetv2-ts';

const notice = (msg) => console.error(`mobilenetv2-ts: ${msg}`);

function skipOrtCudaDownload() {
  const chosen = ['ONNXRUNTIME_NODE_INSTALL', 'npm_config_onnxruntime_node_install', 'ONNXRUNTIME_NODE_INSTALL_CUDA', 'npm_config_onnxruntime_node_install_cuda'];
  if (process.platform !== 'linux' || process.arch !== 'x64' || chosen.some((k) => process.env[k])) return;
  let ortDir;
  try {
    ortDir = path.dirname(require.resolve('onnxruntime-node/package.json', { paths: [ROOT] }));
  } catch {
    return; // not installed next to us (e.g. the clone's own npm ci, where it is already installed)
  }
  let manifest;
  try {
    manifest = require(path.join(ortDir, 'script', 'install-metadata.js')).manifests['linux/x64:cuda12'];
  } catch {
    return; // a version without the download
  }
  const bin = path.join(ortDir, 'bin', 'napi-v6', 'linux', 'x64');
  for (const file of Object.keys(manifest ?? {})) {
    const target = path.join(bin, file);
    if (!fs.existsSync(target)) fs.writeFileSync(target, '');
  }
}

function addonIsCurrent() {
  if (!fs.existsSync(ADDON)) return false;
  const built = fs.statSync(ADDON).mtimeMs;
  if (SOURCES.some((f) => fs.statSync(f).mtimeMs > built)) return false;
  try {
    require(ADDON);
    return true;
  } catch {
    return false;
  }
}

function buildAddon() {
  if (process.env.MNV2_SKIP_NATIVE) return notice(`MNV2_SKIP_NATIVE is set: native engine not built, ONNX Runtime serves (to enable: unset it and npm rebuild mobilenetv2-ts)`);
  if (!fs.existsSync(HEADER)) return notice(`oneDNN not found (${HEADER}): native engine not built, ONNX Runtime serves (to enable: ${ENABLE})`);
  if (addonIsCurrent()) return;
  const r = spawnSync('node-gyp', ['rebuild'], { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' });
  if (r.status !== 0) notice(`building the native engine failed (see above): ONNX Runtime serves (to retry: ${ENABLE})`);
}

skipOrtCudaDownload();
buildAddon();
