#!/usr/bin/env bash
# Builds the web app's hydration bundle into target/site/pkg (powertab.js, powertab_bg.wasm)
# with plain cargo and wasm-bindgen-cli; no cargo-leptos.
#  1. The wasm32 target from rustup; when rustup cannot add it, Debian's rustc-web with its
#     standard library sources, unpacked into .local/rustc-web, building std itself
#     (-Zbuild-std, RUSTC_BOOTSTRAP=1).
#  2. wasm-bindgen-cli at exactly the version in Cargo.lock (cargo install, cached by version).
#  3. wasm-opt -Oz (about a third of the size): the machine's own, or the npm package
#     `binaryen` installed once into .local/binaryen when npm is there; skipped otherwise.
# PT_WASM_FORCE_DEBIAN=1 takes the Debian route even when rustup works (to test it).
# CARGO_TARGET_DIR is honoured; the bundle always goes to target/site/pkg.
# `infra/build-wasm.sh clippy` runs clippy (-D warnings) for the wasm build with the same
# toolchain instead of building.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { printf '[wasm] %s\n' "$*" >&2; }

version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
[ -n "$version" ] || { log "wasm-bindgen not found in Cargo.lock"; exit 1; }

cargo_cmd=(cargo)
build_std=()
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ "${PT_WASM_FORCE_DEBIAN:-}" = 1 ] || ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  if [ "${PT_WASM_FORCE_DEBIAN:-}" = 1 ] || ! rustup target add wasm32-unknown-unknown >&2; then
    log "rustup cannot add wasm32-unknown-unknown: using Debian's rustc-web"
    web="$repo/.local/rustc-web"
    if [ ! -x "$web/usr/bin/rustc" ]; then
      mkdir -p "$web/debs"
      (cd "$web/debs" &&
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        apt-get download rustc-web cargo-web libstd-rust-web-dev libstd-rust-web-1.96 rust-web-src libllvm22 lld-22 >&2)
      for deb in "$web"/debs/*.deb; do dpkg -x "$deb" "$web"; done
    fi
    # rustc finds its sysroot (usr/lib/rustlib, with the std sources) next to its binary.
    export LD_LIBRARY_PATH="$web/usr/lib/x86_64-linux-gnu:$web/usr/lib/llvm-22/lib:${LD_LIBRARY_PATH:-}"
    export RUSTC="$web/usr/bin/rustc" RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$web/usr/lib/llvm-22/bin/wasm-ld"
    # The machine's own cargo drives Debian's rustc (cargo-web needs libgit2, often absent).
    command -v cargo >/dev/null || cargo_cmd=("$web/usr/bin/cargo")
    build_std=(-Zbuild-std=std,panic_abort)
  fi
fi

if [ "${1:-}" = clippy ]; then
  log "clippy for wasm32"
  exec "${cargo_cmd[@]}" clippy "${build_std[@]}" -p powertab-frontend --lib \
    --target wasm32-unknown-unknown --no-default-features --features hydrate -- -D warnings
fi

bindgen="$repo/.local/wasm-bindgen-$version/bin/wasm-bindgen"
if command -v wasm-bindgen >/dev/null && [ "$(wasm-bindgen --version | awk '{print $2}')" = "$version" ]; then
  bindgen=$(command -v wasm-bindgen)
elif [ ! -x "$bindgen" ]; then
  log "installing wasm-bindgen-cli $version (once; cached in .local/)"
  cargo install wasm-bindgen-cli --version "$version" --root "$repo/.local/wasm-bindgen-$version" >&2
fi

log "building the frontend for wasm32"
"${cargo_cmd[@]}" build "${build_std[@]}" -p powertab-frontend --lib --target wasm32-unknown-unknown \
  --no-default-features --features hydrate --profile wasm-release >&2
mkdir -p target/site/pkg
"$bindgen" --target web --no-typescript --out-dir target/site/pkg --out-name powertab \
  "$target_dir/wasm32-unknown-unknown/wasm-release/powertab_frontend.wasm"
binaryen_version=132.0.0
wasm_opt=$(command -v wasm-opt || true)
if [ -z "$wasm_opt" ] && command -v npm >/dev/null; then
  wasm_opt="$repo/.local/binaryen/node_modules/.bin/wasm-opt"
  if [ ! -x "$wasm_opt" ]; then
    log "installing binaryen $binaryen_version from npm (once; cached in .local/)"
    mkdir -p "$repo/.local/binaryen"
    npm install --prefix "$repo/.local/binaryen" --no-audit --no-fund "binaryen@$binaryen_version" >&2 || true
  fi
fi
if [ -n "$wasm_opt" ] && [ -x "$wasm_opt" ]; then
  log "wasm-opt -Oz"
  "$wasm_opt" -Oz target/site/pkg/powertab_bg.wasm -o target/site/pkg/powertab_bg.opt.wasm &&
    mv target/site/pkg/powertab_bg.opt.wasm target/site/pkg/powertab_bg.wasm ||
    log "wasm-opt failed; keeping the unoptimised file"
else
  log "no wasm-opt (binaryen): the bundle is about three times larger"
fi
true
# Content-hashed copies, precompressed: the server sends them with a year-long immutable cache
# and the encoding the browser accepts; the page names them through pkg/bundle.txt.
pkg=target/site/pkg
hash=$(cat "$pkg/powertab.js" "$pkg/powertab_bg.wasm" | sha256sum | cut -c1-16)
rm -f "$pkg"/powertab.*.js* "$pkg"/powertab.*_bg.wasm*
cp "$pkg/powertab.js" "$pkg/powertab.$hash.js"
cp "$pkg/powertab_bg.wasm" "$pkg/powertab.${hash}_bg.wasm"
for f in "$pkg/powertab.$hash.js" "$pkg/powertab.${hash}_bg.wasm"; do
  gzip -9 -k -f "$f"
  if command -v brotli >/dev/null; then brotli -q 11 -k -f "$f"; fi
done
printf 'powertab.%s\n' "$hash" > "$pkg/bundle.txt"
log "built $pkg ($(du -h "$pkg/powertab_bg.wasm" | cut -f1) wasm, $(du -h "$pkg/powertab.${hash}_bg.wasm.gz" | cut -f1) gzipped; bundle powertab.$hash)"
