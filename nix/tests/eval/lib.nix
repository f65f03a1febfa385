# A small stand-in for nixpkgs' `lib`, enough to evaluate nix/module.nix without nixpkgs
# (which cannot be fetched in CI). It is a real, if small, module system: options with
# types that are checked, defaults, mkIf/mkMerge/mkOverride pushed down like
# lib.modules does (conditions are only forced at the option they guard, so
# `config = mkIf cfg.enable { … }` does not recurse), priorities, submodules, and an error
# for definitions of options nobody declared.
let
  inherit (builtins)
    all
    any
    attrNames
    concatMap
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    genList
    head
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    split
    substring
    ;

  # ---- general helpers (same behaviour as nixpkgs' lib) ----
  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: as: if cond then as else { };
  last = xs: elemAt xs (length xs - 1);
  count = pred: foldl' (n: x: if pred x then n + 1 else n) 0;
  concatLists = builtins.concatLists;
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  filterAttrs =
    pred: set:
    listToAttrs (
      concatMap (
        n:
        optional (pred n set.${n}) {
          name = n;
          value = set.${n};
        }
      ) (attrNames set)
    );
  mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
  hasPrefix = p: s: substring 0 (builtins.stringLength p) s == p;
  splitString = sep: s: filter isString (split (escapeRegex sep) s);
  escapeRegex =
    builtins.replaceStrings
      [
        "."
        "["
        "]"
        "("
        ")"
        "*"
        "+"
        "?"
        "^"
        "$"
        "|"
        "\\"
      ]
      [
        "\\."
        "\\["
        "\\]"
        "\\("
        "\\)"
        "\\*"
        "\\+"
        "\\?"
        "\\^"
        "\\$"
        "\\|"
        "\\\\"
      ];
  toInt =
    s:
    let
      m = builtins.match "[0-9]+" s;
    in
    if m == null then throw "toInt: ${s} is not a decimal integer" else builtins.fromJSON s;
  recursiveUpdate =
    lhs: rhs:
    lhs
    // mapAttrs (
      n: v: if isAttrs v && isAttrs (lhs.${n} or null) then recursiveUpdate lhs.${n} v else v
    ) rhs;
  getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram or pkg.pname or pkg.name}";
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };
  showOption = loc: concatStringsSep "." loc;

  # ---- properties ----
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;

  # At an attribute-set level: resolve merge/if/override into plain sets whose children
  # carry the (still unevaluated) condition or priority.
  pushDown =
    v:
    if v._type or null == "merge" then
      concatMap pushDown v.contents
    else if v._type or null == "if" then
      map (mapAttrs (_: mkIf v.condition)) (pushDown v.content)
    else if v._type or null == "override" then
      map (mapAttrs (_: mkOverride v.priority)) (pushDown v.content)
    else
      [ v ];

  # At an option: the definitions with their priorities, conditions evaluated.
  defsOf =
    v:
    if v._type or null == "merge" then
      concatMap defsOf v.contents
    else if v._type or null == "if" then
      (
        if !isBool v.condition then
          throw "mkIf called with a non-Boolean condition"
        else if v.condition then
          defsOf v.content
        else
          [ ]
      )
    else if v._type or null == "override" then
      map (d: d // { priority = v.priority; }) (defsOf v.content)
    else
      [
        {
          value = v;
          priority = 100;
        }
      ];

  highestPriority =
    defs:
    let
      best = foldl' (p: d: if d.priority < p then d.priority else p) 9999 defs;
    in
    filter (d: d.priority == best) defs;

  # ---- options and types ----
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
  isOption = v: isAttrs v && v._type or null == "option";

  mergeEqual =
    loc: defs:
    let
      first = (head defs).value;
    in
    if length defs == 1 || all (d: d.value == first) defs then
      first
    else
      throw "The option `${showOption loc}' has conflicting definition values.";

  mkType =
    {
      name,
      check,
      merge ? mergeEqual,
    }:
    {
      inherit name check merge;
      _type = "type";
    };

  isStorePathLike = v: isAttrs v && (v ? outPath);

  types = rec {
    bool = mkType {
      name = "boolean";
      check = isBool;
    };
    str = mkType {
      name = "string";
      check = isString;
    };
    int = mkType {
      name = "signed integer";
      check = isInt;
    };
    ints.positive = mkType {
      name = "positive integer";
      check = v: isInt v && v > 0;
    };
    port = mkType {
      name = "16 bit unsigned integer";
      check = v: isInt v && v >= 0 && v <= 65535;
    };
    path = mkType {
      name = "path";
      check = v: isPath v || (isString v && hasPrefix "/" v) || isStorePathLike v;
    };
    package = mkType {
      name = "package";
      check = isStorePathLike;
    };
    unspecified = mkType {
      name = "unspecified value";
      check = _: true;
    };
    enum =
      values:
      mkType {
        name = "one of ${concatStringsSep ", " (map builtins.toJSON values)}";
        check = v: elem v values;
      };
    nullOr =
      t:
      mkType {
        name = "null or ${t.name}";
        check = v: v == null || t.check v;
        merge =
          loc: defs:
          if all (d: d.value == null) defs then
            null
          else if any (d: d.value == null) defs then
            throw "The option `${showOption loc}' is defined both null and not null."
          else
            t.merge loc defs;
      };
    either =
      a: b:
      mkType {
        name = "${a.name} or ${b.name}";
        check = v: a.check v || b.check v;
        merge =
          loc: defs:
          if all (d: a.check d.value) defs then
            a.merge loc defs
          else if all (d: b.check d.value) defs then
            b.merge loc defs
          else
            mergeEqual loc defs;
      };
    listOf =
      t:
      mkType {
        name = "list of ${t.name}";
        check = isList;
        merge =
          loc: defs:
          concatMap (
            d:
            genList (
              i:
              checked (loc ++ [ "[${toString i}]" ]) t [
                {
                  value = elemAt d.value i;
                  priority = d.priority;
                }
              ]
            ) (length d.value)
          ) defs;
      };
    attrsOf =
      t:
      mkType {
        name = "attribute set of ${t.name}";
        check = isAttrs;
        merge =
          loc: defs:
          let
            sets = concatMap (d: pushDown d.value) defs;
            names = unique (concatMap attrNames sets);
            defsFor = n: concatMap (s: optional (s ? ${n}) s.${n}) sets;
          in
          listToAttrs (
            concatMap (
              n:
              let
                ds = highestPriority (concatMap defsOf (defsFor n));
              in
              optional (ds != [ ]) {
                name = n;
                value = checked (loc ++ [ n ]) t ds;
              }
            ) names
          );
      };
    submodule =
      module:
      mkType {
        name = "submodule";
        check = isAttrs;
        merge =
          loc: defs:
          (evalModulesAt loc {
            modules = [ module ] ++ map (d: { config = d.value; }) defs;
          }).config;
      };
    # Like types.anything: attribute sets merge per key, lists concatenate, other values
    # must agree.
    anything = mkType {
      name = "anything";
      check = _: true;
      merge =
        loc: defs:
        if all (d: isAttrs d.value && !(isStorePathLike d.value)) defs then
          (attrsOf anything).merge loc defs
        else if all (d: isList d.value) defs then
          concatMap (d: d.value) defs
        else
          mergeEqual loc defs;
    };
  };

  # Type-check and merge the chosen definitions of one option.
  checked =
    loc: type: defs:
    let
      bad = filter (d: !(type.check d.value)) defs;
    in
    if bad != [ ] then
      throw "A definition for option `${showOption loc}' is not of type `${type.name}': ${builtins.toJSON (head bad).value}"
    else
      type.merge loc defs;

  mergeOption =
    loc: opt: values:
    let
      defs =
        concatMap defsOf values
        ++ optional (opt ? default) {
          value = opt.default;
          priority = 1500;
        };
      chosen = highestPriority defs;
    in
    if chosen == [ ] then
      throw "The option `${showOption loc}' is used but not defined."
    else
      checked loc (opt.type or types.unspecified) chosen;

  # Merge the definitions `values` against the declarations `decl` at `loc`.
  mergeTree =
    loc: decl: values:
    if isOption decl then
      mergeOption loc decl values
    else
      let
        sets = concatMap pushDown values;
        undeclared = filter (n: !(decl ? ${n})) (unique (concatMap attrNames sets));
      in
      if undeclared != [ ] then
        throw "The option `${showOption (loc ++ [ (head undeclared) ])}' does not exist."
      else
        mapAttrs (n: d: mergeTree (loc ++ [ n ]) d (concatMap (s: optional (s ? ${n}) s.${n}) sets)) decl;

  # Declarations of several modules, merged into one tree.
  mergeDecls = foldl' (
    acc: o:
    acc
    // mapAttrs (
      n: v:
      if acc ? ${n} then
        (
          if isOption v || isOption acc.${n} then
            throw "The option `${n}' is declared twice."
          else
            mergeDecls [
              acc.${n}
              v
            ]
        )
      else
        v
    ) o
  ) { };

  evalModulesAt =
    loc:
    {
      modules,
      specialArgs ? { },
    }:
    let
      args = specialArgs // {
        inherit config lib;
        options = declarations;
      };
      load =
        m:
        if isPath m then
          load (import m)
        else
          let
            v = if isFunction m then m args else m;
            full =
              if v ? options || v ? config || v ? imports then
                v
              else
                {
                  config = v;
                };
          in
          [
            {
              options = full.options or { };
              config = full.config or { };
            }
          ]
          ++ concatMap load (full.imports or [ ]);
      loaded = concatMap load modules;
      declarations = mergeDecls (map (m: m.options) loaded);
      config = mergeTree loc declarations (map (m: m.config) loaded);
    in
    {
      inherit config;
      options = declarations;
    };

  lib = {
    inherit
      concatLists
      count
      filterAttrs
      getExe
      hasPrefix
      last
      literalExpression
      mapAttrs
      mapAttrsToList
      mkDefault
      mkEnableOption
      mkForce
      mkIf
      mkMerge
      mkOption
      mkOverride
      optional
      optionalAttrs
      recursiveUpdate
      splitString
      toInt
      types
      ;
    evalModules = evalModulesAt [ ];
  };
in
lib
