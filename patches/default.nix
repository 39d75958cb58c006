# The patch series of patches/<package>/series, for Nix. Builtins only, so that it evaluates
# without nixpkgs (the tests evaluate it with plain `nix eval`). `dynix patch` reads the same files.
#
#   (import ./patches { }).series "vllm"
#     -> [ { pin = "dynamo-vllm-patch"; }
#          { file = ./vllm/0001-….patch; name = "0001-…"; } … ]
#   (import ./patches { }).resolve fetchPin "vllm"
#     -> [ (fetchPin "dynamo-vllm-patch") ./vllm/0001-….patch … ]   (a derivation's `patches`)
#
# A series file names one entry per line, in the order they apply (`patch -p1`): a patch file in
# the package's folder, or `pin:NAME` for a file pinned in pkgs/pins.toml. `#` starts a comment;
# blank lines are skipped. An entry naming a missing file is an evaluation error.
{ }:
let
  inherit (builtins)
    elemAt
    filter
    genList
    head
    isString
    length
    match
    pathExists
    readDir
    split
    ;

  # Every folder here that has a series file.
  here = readDir ./.;
  packages = filter (name: here.${name} == "directory" && pathExists (./. + "/${name}/series")) (
    builtins.attrNames here
  );

  seriesFile =
    pkg:
    let
      file = ./. + "/${pkg}/series";
    in
    if isString pkg && match "[A-Za-z0-9_.-]+" pkg != null && pathExists file then
      file
    else
      throw "patches: no patch series for '${toString pkg}' (series: ${builtins.concatStringsSep ", " packages})";

  lines = text: filter isString (split "\n" text);

  # The entry a line names, or "" for a blank or comment line; null when the line is not one word.
  word = line: match "[[:space:]]*([^[:space:]#]*)[[:space:]]*(#.*)?" line;

  entry =
    pkg: lineNo: name:
    let
      where = "patches/${pkg}/series:${toString lineNo}";
      pin = match "pin:(.*)" name;
      file = ./. + "/${pkg}/${name}";
      stem = match "(.*)\\.patch" name;
    in
    if pin != null then
      if match "[A-Za-z0-9_.-]+" (head pin) != null then
        { pin = head pin; }
      else
        throw "${where}: 'pin:' must be followed by the name of a pin in pkgs/pins.toml"
    else if match "[A-Za-z0-9_.+-]+" name == null || name == "." || name == ".." then
      throw "${where}: '${name}' is not a file name in patches/${pkg}"
    else if !pathExists file then
      throw "${where}: no patch file '${name}' in patches/${pkg}"
    else
      {
        inherit file;
        name = if stem != null then head stem else name;
      };

  series =
    pkg:
    let
      all = lines (builtins.readFile (seriesFile pkg));
      parsed = genList (
        i:
        let
          line = elemAt all i;
          m = word line;
        in
        if m == null then
          throw "patches/${pkg}/series:${toString (i + 1)}: expected one patch file name or pin:NAME, got '${line}'"
        else
          {
            lineNo = i + 1;
            name = head m;
          }
      ) (length all);
    in
    map (p: entry pkg p.lineNo p.name) (filter (p: p.name != "") parsed);

  resolve = fetchPin: pkg: map (e: if e ? pin then fetchPin e.pin else e.file) (series pkg);
in
{
  inherit packages series resolve;
}
