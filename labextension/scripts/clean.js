// Remove compiled TypeScript, the previous labextension build and the chat widget's bundle
// (portable `rm -rf`).
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const targets = [
  'lib',
  'tsconfig.tsbuildinfo',
  '../ambient_jupyter/labextension',
  '../ambient_jupyter/static/widget.js',
  '../ambient_jupyter/static/widget.css'
];
for (const target of targets) {
  fs.rmSync(path.join(root, target), { recursive: true, force: true });
}
