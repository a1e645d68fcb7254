# bash completion for sptelab. Everything it offers is read from sptelab
# itself: the commands from `sptelab --help`, each command's options from
# `sptelab help COMMAND`, and the values of --scheme, --op, --backend and
# the `list` kinds from `sptelab list`, so it never falls behind the binary.
# Install: copy to /usr/share/bash-completion/completions/sptelab, or
# `source` it from ~/.bashrc.

_sptelab_first_words() {
  # The first word of each line `sptelab ARGS` prints, skipping headings.
  "${_sptelab_bin:-sptelab}" "$@" 2>/dev/null | awk '{print $1}'
}

_sptelab() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local bin=${COMP_WORDS[0]}
  local _sptelab_bin=$bin
  local command=${COMP_WORDS[1]}
  COMPREPLY=()
  if ((COMP_CWORD == 1)); then
    local commands
    commands=$("$bin" --help 2>/dev/null | awk '/^commands:/ {on=1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on=0}')
    mapfile -t COMPREPLY < <(compgen -W "$commands help --version --help" -- "$cur")
    return
  fi
  case $prev in
    --scheme) mapfile -t COMPREPLY < <(compgen -W "all $(_sptelab_first_words list schemes)" -- "$cur"); return ;;
    --op) mapfile -t COMPREPLY < <(compgen -W "all $(_sptelab_first_words list ops)" -- "$cur"); return ;;
    --backend) mapfile -t COMPREPLY < <(compgen -W "kvm soft" -- "$cur"); return ;;
    --format) mapfile -t COMPREPLY < <(compgen -W "text chrome" -- "$cur"); return ;;
    --variant) mapfile -t COMPREPLY < <(compgen -W "buggy fixed" -- "$cur"); return ;;
    --exit-status) mapfile -t COMPREPLY < <(compgen -W "guest sptelab" -- "$cur"); return ;;
    --trace | --output | --save | --replay | --ops | --save-kernel | --kernel-from) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
  esac
  if [[ $command == help ]]; then
    ((COMP_CWORD == 2)) && COMP_WORDS=("$bin" "") COMP_CWORD=1 _sptelab
    return
  fi
  if [[ $cur == -* ]]; then
    local options
    options=$("$bin" help "$command" 2>/dev/null | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
    mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
    return
  fi
  case $command in
    list) ((COMP_CWORD == 2)) && mapfile -t COMPREPLY < <(compgen -W "guests schemes scenarios ops points" -- "$cur") ;;
    race) ((COMP_CWORD == 2)) && mapfile -t COMPREPLY < <(compgen -W "$(_sptelab_first_words list scenarios)" -- "$cur") ;;
    run) mapfile -t COMPREPLY < <(compgen -W "$(_sptelab_first_words list guests)" -f -- "$cur") ;;
    *) mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
  esac
}

complete -F _sptelab sptelab
