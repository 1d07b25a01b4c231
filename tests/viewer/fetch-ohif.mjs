// OHIF's built viewer (the dist/ of @ohif/app) into ./ohif: `npm ci` cannot install @ohif/app
// itself, whose dependencies name @ohif/ui and @ohif/i18n versions npm never got; the tarball
// alone is all a browser needs. Its integrity is checked against package.json.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const here = new URL(".", import.meta.url).pathname;
const { ohif } = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
const target = join(here, "ohif");
const stamp = join(target, ".integrity");
if (existsSync(stamp) && readFileSync(stamp, "utf8") === ohif.integrity) process.exit(0);

const work = mkdtempSync(join(tmpdir(), "ohif-"));
const [packed] = JSON.parse(
  execFileSync("npm", ["pack", ohif.package, "--json", "--pack-destination", work], {
    encoding: "utf8",
  }),
);
const tarball = join(work, packed.filename);
const digest = "sha512-" + createHash("sha512").update(readFileSync(tarball)).digest("base64");
if (digest !== ohif.integrity) throw new Error(`${ohif.package}: integrity ${digest} is not ${ohif.integrity}`);
execFileSync("tar", ["-xzf", tarball, "-C", work, "package/dist"]);
rmSync(target, { recursive: true, force: true });
renameSync(join(work, "package", "dist"), target);
writeFileSync(stamp, ohif.integrity);
rmSync(work, { recursive: true, force: true });
