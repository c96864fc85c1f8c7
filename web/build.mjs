// Builds the console into dist/: one minified ES module bundle, the page and its stylesheet.
// Prints the gzipped size of the JavaScript; fails if it exceeds the budget.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET_GZIP_BYTES = 250 * 1024;

// `import { abi } from "abi:LeaseMarket"`: only the ABI of the compiled contract, never its bytecode.
const contractAbis = {
  name: "contract-abis",
  setup(builder) {
    builder.onResolve({ filter: /^abi:/ }, (args) => ({ path: args.path.slice(4), namespace: "abi" }));
    builder.onLoad({ filter: /.*/, namespace: "abi" }, (args) => {
      const path = `../contracts/out/${args.path}.json`;
      const { abi } = JSON.parse(readFileSync(path, "utf8"));
      return { contents: `export const abi = ${JSON.stringify(abi)};`, loader: "js", watchFiles: [path] };
    });
  },
};

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  outfile: "dist/app.js",
  legalComments: "none",
  plugins: [contractAbis],
  logLevel: "warning",
});
for (const file of ["index.html", "style.css", "favicon.svg"]) copyFileSync(`public/${file}`, `dist/${file}`);
const js = readFileSync("dist/app.js");
const gzipped = gzipSync(js, { level: 9 }).length;
const report = { app_js_bytes: js.length, app_js_gzip_bytes: gzipped, budget_gzip_bytes: BUDGET_GZIP_BYTES };
writeFileSync("dist/build.json", JSON.stringify(report) + "\n");
console.log(`web console built: dist/app.js ${js.length} bytes, ${gzipped} bytes gzipped`);
if (gzipped > BUDGET_GZIP_BYTES) {
  console.error(`bundle over budget: ${gzipped} > ${BUDGET_GZIP_BYTES} bytes gzipped`);
  process.exit(1);
}
