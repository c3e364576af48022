// The import map of every page in this folder, written once: how a page loads the
// package and its dependencies from ../node_modules without a bundler. zstd-wasm's
// browser build uses extensionless relative imports, mapped here to its files. An import
// map cannot be an external file, so this classic script (loaded in <head>, before any
// module script) adds it to the page as an inline one.
const zstd = '../node_modules/@bokuweb/zstd-wasm/dist/web/';
const imports = {
  '@noble/ed25519': '../node_modules/@noble/ed25519/index.js',
  '@noble/hashes/': '../node_modules/@noble/hashes/',
  'onnxruntime-web': '../node_modules/onnxruntime-web/dist/ort.wasm.bundle.min.mjs',
  '@bokuweb/zstd-wasm': `${zstd}index.web.js`,
  [`${zstd}errors`]: `${zstd}errors/index.js`,
};
for (const name of ['module', 'zstd', 'simple/compress', 'simple/decompress',
  'simple/compress_using_dict', 'simple/decompress_using_dict']) {
  imports[zstd + name] = `${zstd}${name}.js`;
}
const map = document.createElement('script');
map.type = 'importmap';
map.textContent = JSON.stringify({ imports });
document.currentScript.after(map);
