# A stand-in for the few parts of nixpkgs that nix/module.nix uses: `formats.toml` (with a
# TOML writer in pure Nix), `runCommand` (returns its inputs instead of building) and
# package placeholders. Store paths are fake; nothing is built.
{ lib }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    match
    replaceStrings
    toJSON
    ;

  fakePackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };

  isDerivation = v: isAttrs v && v ? outPath;

  # ---- TOML ----
  key = k: if match "[A-Za-z0-9_-]+" k != null then k else toJSON k;
  string =
    s: "\"" + replaceStrings [ "\\" "\"" "\n" "\t" "\r" ] [ "\\\\" "\\\"" "\\n" "\\t" "\\r" ] s + "\"";
  value =
    v:
    if isBool v then
      (if v then "true" else "false")
    else if isInt v || isFloat v then
      toString v
    else if isString v || isPath v || isDerivation v then
      string (toString v)
    else if isList v then
      "[" + concatStringsSep ", " (map value v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${key k} = ${value v.${k}}") (attrNames v)) + " }"
    else
      throw "TOML cannot represent ${toJSON v}";
  isTable = v: isAttrs v && !(isDerivation v);
  table =
    path: set:
    let
      names = attrNames set;
      plain = filter (k: !(isTable set.${k})) names;
      tables = filter (k: isTable set.${k}) names;
      header = if path == [ ] then "" else "\n[${concatStringsSep "." (map key path)}]\n";
    in
    header
    + concatStringsSep "" (map (k: "${key k} = ${value set.${k}}\n") plain)
    + concatStringsSep "" (map (k: table (path ++ [ k ]) set.${k}) tables);
in
{
  formats.toml = _: {
    type = lib.types.anything;
    generate = name: v: {
      inherit name;
      outPath = "/nix/store/11111111111111111111111111111111-${name}";
      text = table [ ] v;
    };
  };

  # The build script and environment, for the tests to inspect.
  runCommand =
    name: env: buildCommand:
    env
    // {
      inherit name buildCommand;
      outPath = "/nix/store/22222222222222222222222222222222-${name}";
    };

  coreutils = fakePackage "coreutils";
  systemd = fakePackage "systemd";
  snirouter = fakePackage "snirouter";
}
