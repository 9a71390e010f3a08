// Runs before node-gyp: one clear message when oneDNN is missing, instead of a compiler error.
const fs = require('node:fs');
const header = '/usr/include/oneapi/dnnl/dnnl.hpp';
if (!fs.existsSync(header)) {
  console.error(`\nmobilenetv2-ts: oneDNN headers not found (${header}).\n` +
    'Install them first:  sudo apt-get install -y libdnnl-dev\n' +
    '(Debian 12 ships oneDNN 2.6; the native training engine is built against it.)\n');
  process.exit(1);
}
