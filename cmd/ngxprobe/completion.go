package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// cmdCompletion prints a completion script for bash or zsh: commands,
// each command's flags, and function names, which it asks
// `ngxprobe funcs --names` for, with the -p or --binary already typed.
func cmdCompletion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("completion", flag.ContinueOnError)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "bash" && pos[0] != "zsh") {
		return fmt.Errorf("%w: completion needs bash or zsh", errUsage)
	}
	var flags strings.Builder
	for _, name := range commandOrder {
		fmt.Fprintf(&flags, "    %s) flags=%q ;;\n", name, strings.Join(commandFlags(name), " "))
	}
	script := strings.NewReplacer("@COMMANDS@", strings.Join(commandOrder, " "), "@FLAGS@", flags.String()).Replace(bashCompletion)
	if pos[0] == "zsh" {
		script = "autoload -U +X bashcompinit && bashcompinit\n" + script
	}
	_, err = io.WriteString(stdout, script)
	return err
}

// commandFlags lists a command's flags as they are typed.
func commandFlags(name string) []string {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	registerFlags(name, fs)
	var out []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			out = append(out, "-"+f.Name)
		} else {
			out = append(out, "--"+f.Name)
		}
	})
	return out
}

// registerFlags registers a command's flags on fs, the same set the
// command parses.
func registerFlags(name string, fs *flag.FlagSet) {
	switch name {
	case "run":
		var f runFlags
		f.register(fs)
	case "watch":
		var f watchFlags
		f.register(fs)
	case "closes":
		var f closesFlags
		f.register(fs)
	case "check":
		var f targetFlags
		var s scriptFlags
		f.register(fs)
		s.register(fs)
	case "funcs":
		var f funcsFlags
		f.register(fs)
	case "fields":
		var f targetFlags
		f.register(fs)
	}
}

const bashCompletion = `# ngxprobe completion: eval "$(ngxprobe completion bash)"
_ngxprobe() {
  local cur prev cmd i target=() flags
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  cmd=${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
    return
  fi
  case $cmd in
@FLAGS@    *) flags="" ;;
  esac
  case $prev in
    --binary|--module|--debug-dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    -p) COMPREPLY=($(compgen -W "$(pgrep -f 'nginx: master' 2>/dev/null)" -- "$cur")); return ;;
    -o) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
    --mode) COMPREPLY=($(compgen -W "exact diff both" -- "$cur")); return ;;
    --attach) COMPREPLY=($(compgen -W "auto multi cookie per-site" -- "$cur")); return ;;
    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return
  fi
  for ((i = 2; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -p|--binary) target=("${COMP_WORDS[i]}" "${COMP_WORDS[i+1]}") ;;
    esac
  done
  case $cmd in
    run|check|funcs)
      if [ ${#target[@]} -gt 0 ] && [[ $cur != */* ]]; then
        COMPREPLY=($(compgen -W "$(ngxprobe funcs --names "${target[@]}" "$cur" 2>/dev/null)" -- "$cur"))
      fi
      [ "$cmd" != funcs ] && COMPREPLY+=($(compgen -f -- "$cur")) ;;
  esac
}
complete -F _ngxprobe ngxprobe
`
