// Build the chat widget (ambient_jupyter.chat()) from the sidebar's own sources: src/widget.ts,
// bundled with the renderer it shares with the sidebar, and style/base.css, the one stylesheet.
// They land in ../ambient_jupyter/static/ (gitignored) as the anywidget's _esm and _css.
//
// The bundle must load where there is no JupyterLab (VS Code, Colab): an import of a JupyterLab
// or Lumino package fails the build instead of being bundled or left to the page to resolve.
//
//   node scripts/build-widget.js [--production]   (--production minifies)
const esbuild = require('esbuild');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, '..', 'ambient_jupyter', 'static');
const production = process.argv.includes('--production');

const noJupyterLab = {
  name: 'no-jupyterlab',
  setup(build) {
    build.onResolve({ filter: /^@(jupyterlab|lumino|jupyter)\// }, args => ({
      errors: [{ text: `${args.path} (imported by ${args.importer}) cannot be in the chat widget's bundle` }]
    }));
  }
};

async function main() {
  fs.mkdirSync(out, { recursive: true });
  const banner = '/* ambient-jupyter chat widget, built from labextension/ (scripts/build-widget.js): do not edit. */';
  const common = { bundle: true, minify: production, logLevel: 'warning' };
  await esbuild.build({
    ...common,
    entryPoints: [path.join(root, 'src', 'widget.ts')],
    outfile: path.join(out, 'widget.js'),
    format: 'esm',
    target: 'es2020',
    sourcemap: production ? false : 'inline',
    banner: { js: banner },
    plugins: [noJupyterLab]
  });
  await esbuild.build({
    ...common,
    entryPoints: [path.join(root, 'style', 'base.css')],
    outfile: path.join(out, 'widget.css'),
    banner: { css: banner }
  });
  for (const name of ['widget.js', 'widget.css']) {
    const size = fs.statSync(path.join(out, name)).size;
    console.log(`chat widget: ambient_jupyter/static/${name} ${(size / 1024).toFixed(1)} kB`);
  }
}

main().catch(() => process.exit(1));
