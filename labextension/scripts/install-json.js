// Put install.json (how to uninstall: it is a Python package) into the built extension,
// so the wheel's share/jupyter/labextensions/ambient-jupyter carries it with the build.
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const pkg = require(path.join(root, 'package.json'));
const outputDir = path.join(root, pkg.jupyterlab.outputDir);
fs.copyFileSync(path.join(root, '..', 'install.json'), path.join(outputDir, 'install.json'));
