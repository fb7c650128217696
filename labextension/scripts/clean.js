// Remove compiled TypeScript and the previous labextension build (portable `rm -rf`).
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
for (const target of ['lib', 'tsconfig.tsbuildinfo', '../ambient_jupyter/labextension']) {
  fs.rmSync(path.join(root, target), { recursive: true, force: true });
}
