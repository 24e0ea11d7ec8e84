#!/bin/bash -p
# Entrypoint of the pi-sandbox images.
#
# 1. Reads the secrets in $PI_SECRETS_DIR (default /run/secrets) and checks
#    them, without exporting anything yet.
# 2. Runs codex-universal's language setup when a CODEX_ENV_* variable is set.
# 3. Exports each secret byte for byte as an environment variable.
# 4. Replaces itself with the command (default: pi --mode rpc), so that the
#    command receives signals directly.
#
# Secrets folder layouts:
#   manifest mode  $PI_SECRETS_DIR/manifest has one "ENV_NAME<TAB>s-N" line per
#                  secret, and the regular file $PI_SECRETS_DIR/s-N contains its
#                  value. Empty lines are skipped. Any other problem stops the
#                  container before the command starts.
#   legacy mode    no manifest: each regular file whose name does not start
#                  with a dot becomes a variable named after the file in upper
#                  case. Files that cannot be exported are skipped with a
#                  warning.
#
# Exit status when the command does not start:
#   65        a secret cannot be exported (manifest mode only)
#   78        codex-universal's language setup failed
#   126, 127  the command could not be executed, or was not found
# Once the command runs, the exit status is the command's own.
#
# Standard output belongs to the command (pi's RPC stream), so every message
# goes to standard error. No message contains a secret value, and tracing
# (set -x) must stay off. The "-p" on the first line stops bash from
# importing functions and BASH_ENV, SHELLOPTS, BASHOPTS, CDPATH and
# GLOBIGNORE from the environment.

set -uo pipefail
shopt -s nullglob
shopt -u dotglob

readonly EXIT_INVALID_SECRETS=65
readonly EXIT_SETUP_FAILED=78
readonly MAX_ENV_NAME_LENGTH=255
readonly DEFAULT_SECRETS_DIR=/run/secrets
readonly DEFAULT_CODEX_SETUP_SCRIPT=/opt/codex/setup_universal.sh

# Names that change how a shell, the dynamic loader, Node.js or pi finds and
# runs code. They must equal RESERVED_ENV_NAMES and RESERVED_ENV_PREFIXES in
# src/pi_sandbox/_secrets.py; tests/images/test_reserved_names.py compares
# them. Names are compared in upper case.
readonly RESERVED_ENV_NAMES=(
    BASHOPTS
    BASHPID
    BASH_ENV
    CDPATH
    DIRSTACK
    ENV
    EPOCHREALTIME
    EPOCHSECONDS
    EUID
    FUNCNAME
    GCONV_PATH
    GLOBIGNORE
    GROUPS
    HISTCMD
    HOME
    HOSTALIASES
    IFS
    LINENO
    LOCALDOMAIN
    NODE_EXTRA_CA_CERTS
    NODE_OPTIONS
    NODE_PATH
    NODE_REPL_EXTERNAL_MODULE
    OLDPWD
    OPTIND
    PATH
    PERL5LIB
    PERL5OPT
    PIPESTATUS
    PI_CODING_AGENT_DIR
    PI_SECRETS_DIR
    PI_SESSION_ID
    PPID
    PROMPT_COMMAND
    PS4
    PWD
    PYTHONHOME
    PYTHONPATH
    PYTHONSTARTUP
    RANDOM
    RES_OPTIONS
    SECONDS
    SHELL
    SHELLOPTS
    SHLVL
    SRANDOM
    TMPDIR
    UID
    USER
)
readonly RESERVED_ENV_PREFIXES=(
    LD_
    DYLD_
    BASH_
    _PI_
    NPM_CONFIG_
)

# The variables of this script that are alive while secrets are exported
# start with this prefix, so a secret must not.
readonly INTERNAL_PREFIX=_pi_

# Spelled out because bracket ranges such as [A-Z] follow the locale's
# collation order.
readonly ASCII_UPPER=ABCDEFGHIJKLMNOPQRSTUVWXYZ
readonly ASCII_LOWER=abcdefghijklmnopqrstuvwxyz
readonly ENV_NAME_REGEX="^[${ASCII_UPPER}${ASCII_LOWER}_][${ASCII_UPPER}${ASCII_LOWER}0123456789_]*\$"
readonly SECRET_FILE_REGEX='^s-[0123456789]+$'

# The secrets read so far, in order: name, value, and where each came from
# (for messages).
_pi_secret_names=()
_pi_secret_values=()
_pi_secret_origins=()
# "error" in manifest mode, where any problem stops the container, and
# "warning" in legacy mode, where the secret is skipped.
_pi_severity=error


log_error() {
    printf 'pi-sandbox entrypoint: error: %s\n' "$1" >&2
}

log_warning() {
    printf 'pi-sandbox entrypoint: warning: %s\n' "$1" >&2
}

# Print a message as an error or a warning; $1 is "error" or "warning".
report() {
    if [[ $1 == error ]]; then
        log_error "$2"
    else
        log_warning "$2"
    fi
}

# Print $1 with ASCII lower-case letters made upper case. ${name^^} is not
# used because it follows the locale: in a Turkish locale "i" becomes a
# dotted capital I, and "ld_preload" would slip past the reserved names.
to_ascii_upper() {
    local text=$1 result="" char before i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        before=${ASCII_LOWER%%"$char"*}
        if ((${#before} < ${#ASCII_LOWER})); then
            char=${ASCII_UPPER:${#before}:1}
        fi
        result+=$char
    done
    printf '%s' "$result"
}

# Print why $1 cannot carry a secret, or nothing when it can. The name is
# quoted only once it is known to be an identifier, because a malformed
# manifest line might hold a value where the name belongs.
env_name_problem() {
    local name=$1 upper entry
    if [[ ! $name =~ $ENV_NAME_REGEX ]]; then
        printf 'invalid environment variable name: use letters, digits and underscores, not starting with a digit'
        return
    fi
    if ((${#name} > MAX_ENV_NAME_LENGTH)); then
        printf 'the environment variable name is %d characters long; the maximum is %d' \
            "${#name}" "$MAX_ENV_NAME_LENGTH"
        return
    fi
    upper=$(to_ascii_upper "$name")
    for entry in "${RESERVED_ENV_NAMES[@]}"; do
        if [[ $upper == "$entry" ]]; then
            printf '%s is reserved because it changes how programs in the sandbox load or run; choose another name' "$name"
            return
        fi
    done
    for entry in "${RESERVED_ENV_PREFIXES[@]}"; do
        if [[ $upper == "$entry"* ]]; then
            printf '%s is reserved because names starting with %s change how programs in the sandbox load or run; choose another name' \
                "$name" "$entry"
            return
        fi
    done
    if [[ $name == "$INTERNAL_PREFIX"* ]]; then
        printf '%s starts with %s, which the entrypoint uses for its own variables; choose another name' \
            "$name" "$INTERNAL_PREFIX"
    fi
}

# Print the longest value, in bytes, that Linux passes to a new program in a
# variable named $1. execve() rejects any single "NAME=value" string longer
# than MAX_ARG_STRLEN (32 pages) including its terminating NUL.
max_value_bytes() {
    local page_size
    page_size=$(getconf PAGESIZE 2>/dev/null) || page_size=4096
    printf '%d' $((32 * page_size - ${#1} - 2))
}

# Read secret $2 from file $3 and append it to the secrets to export.
# $1 is "error" or "warning", $4 starts any message about the file, and $5
# names where the secret comes from in later messages. Return 1, after
# reporting the problem, when the file cannot be used.
append_secret() {
    local severity=$1 name=$2 path=$3 context=$4 origin=$5 size limit value
    if [[ -L $path ]]; then
        report "$severity" "$context is a symbolic link; secret files must be regular files"
        return 1
    fi
    if [[ ! -e $path ]]; then
        report "$severity" "$context does not exist"
        return 1
    fi
    if [[ ! -f $path ]]; then
        report "$severity" "$context is not a regular file"
        return 1
    fi
    if [[ ! -r $path ]]; then
        report "$severity" "$context is not readable by uid $EUID; make it readable by the sandbox's user"
        return 1
    fi

    if ! size=$(stat -c %s -- "$path" 2>/dev/null); then
        report "$severity" "$context could not be inspected with stat"
        return 1
    fi
    limit=$(max_value_bytes "$name")
    if ((size > limit)); then
        report "$severity" "$context is $size bytes; Linux passes at most $limit bytes in a variable named $name"
        return 1
    fi
    if ((size == 0)); then
        report "$severity" "$context is empty"
        return 1
    fi

    # With NUL as the delimiter, read keeps every other byte (newlines,
    # backslashes, invalid UTF-8) and succeeds only if it finds a NUL.
    if IFS= read -r -d '' value <"$path"; then
        report "$severity" "$context contains a NUL byte, which cannot be passed in an environment variable"
        return 1
    fi

    _pi_secret_names+=("$name")
    _pi_secret_values+=("$value")
    _pi_secret_origins+=("$origin")
}

# Read the secrets listed in $1/manifest. Return 1 at the first problem.
collect_manifest_secrets() {
    local dir=$1 manifest=$1/manifest line line_number=0 name file context problem before_nul newlines
    local -A line_of_name=()

    if [[ -L $manifest || ! -f $manifest ]]; then
        log_error "$manifest is not a regular file"
        return 1
    fi
    if [[ ! -r $manifest ]]; then
        log_error "$manifest is not readable by uid $EUID; make it readable by the sandbox's user"
        return 1
    fi

    # Reading by lines drops NUL bytes and joins the text on both sides, so
    # a NUL is looked for first.
    if IFS= read -r -d '' before_nul <"$manifest"; then
        newlines=${before_nul//[!$'\n']/}
        log_error "$manifest line $((${#newlines} + 1)): contains a NUL byte"
        return 1
    fi

    while IFS= read -r line || [[ -n $line ]]; do
        line_number=$((line_number + 1))
        context="$manifest line $line_number"
        if [[ -z $line ]]; then
            continue
        fi
        if [[ $line != *$'\t'* ]]; then
            log_error "$context: expected ENV_NAME<TAB>s-N but the line has no tab"
            return 1
        fi

        name=${line%%$'\t'*}
        file=${line#*$'\t'}
        problem=$(env_name_problem "$name")
        if [[ -n $problem ]]; then
            log_error "$context: $problem"
            return 1
        fi
        context+=" ($name)"
        if [[ -n ${line_of_name[$name]:-} ]]; then
            log_error "$context: $name is already set by line ${line_of_name[$name]}"
            return 1
        fi
        line_of_name[$name]=$line_number
        if [[ ! $file =~ $SECRET_FILE_REGEX ]]; then
            log_error "$context: invalid secret file name; expected s- followed by digits, naming a file in $dir"
            return 1
        fi

        append_secret error "$name" "$dir/$file" "$context: the secret file" "$context" || return 1
    done <"$manifest"
}

# Read each regular file in $1 as a secret named after the file in upper
# case, skipping with a warning the files that cannot be exported.
collect_legacy_secrets() {
    local dir=$1 path file label name problem
    local -A file_of_name=()

    if [[ ! -r $dir || ! -x $dir ]]; then
        log_warning "cannot list the secrets folder $dir as uid $EUID; no secrets are exported"
        return 0
    fi

    for path in "$dir"/*; do
        file=${path##*/}
        label=$(printf '%q' "$file")
        problem=$(env_name_problem "$file")
        if [[ -n $problem ]]; then
            log_warning "skipped secrets file $label: $problem"
            continue
        fi
        name=$(to_ascii_upper "$file")
        if [[ -n ${file_of_name[$name]:-} ]]; then
            log_warning "skipped secrets file $label: $name is already set from file ${file_of_name[$name]}"
            continue
        fi
        if append_secret warning "$name" "$path" "skipped secrets file $label: it" "secrets file $label"; then
            file_of_name[$name]=$label
        fi
    done
}

# Run codex-universal's setup script when a CODEX_ENV_* variable is set. It
# runs before any secret is exported, reads nothing from standard input
# (pi's RPC stream) and writes its output to standard error.
run_language_setup() {
    local script=${PI_CODEX_SETUP_SCRIPT:-$DEFAULT_CODEX_SETUP_SCRIPT} status
    # compgen fails when no exported variable matches.
    if ! compgen -e CODEX_ENV_ >/dev/null; then
        return 0
    fi
    if [[ ! -f $script ]]; then
        log_warning "CODEX_ENV_* is set but $script does not exist, so no language runtime is configured"
        return 0
    fi

    /bin/bash --login -- "$script" </dev/null >&2
    status=$?
    if ((status != 0)); then
        log_error "the language setup $script failed with exit status $status; check the CODEX_ENV_* values"
        return 1
    fi
}

# Report that secret number $1 cannot be exported, with $2 as the reason
# after its name. Return 1 in manifest mode, where this stops the container.
# In legacy mode the message is a warning and the caller drops the secret.
report_unexportable() {
    local _pi_name=${_pi_secret_names[$1]} _pi_origin=${_pi_secret_origins[$1]}
    if [[ $_pi_severity == warning ]]; then
        log_warning "skipped $_pi_origin: $_pi_name $2; rename the file"
        return 0
    fi
    log_error "$_pi_origin: $_pi_name $2; choose another name"
    return 1
}

# Reject secrets whose names bash itself gives a meaning: read-only, integer
# (assigning to one evaluates the value as arithmetic, which runs any $(...)
# inside), array and nameref variables. Call it at the top level, where only
# this script's $INTERNAL_PREFIX variables can shadow a global.
check_shell_variables() {
    local _pi_index _pi_name _pi_attributes
    for _pi_index in "${!_pi_secret_names[@]}"; do
        _pi_name=${_pi_secret_names[_pi_index]}
        # ${!name@a} counts as an unbound reference under "set -u" when the
        # variable is unset.
        set +u
        _pi_attributes=${!_pi_name@a}
        set -u
        if [[ $_pi_attributes == *[aAinr]* ]]; then
            report_unexportable "$_pi_index" "is a read-only, integer, array or nameref variable of the entrypoint's shell and cannot carry a secret" || return 1
            unset -v '_pi_secret_names[_pi_index]' '_pi_secret_values[_pi_index]' '_pi_secret_origins[_pi_index]'
        fi
    done
}

# Export every secret, then check that each variable holds its value. Call
# it at the top level, like check_shell_variables.
export_secrets() {
    local _pi_index _pi_name
    for _pi_index in "${!_pi_secret_names[@]}"; do
        _pi_name=${_pi_secret_names[_pi_index]}
        # Standard error is discarded because bash quotes the value in some
        # warnings, for example for an unknown locale in LC_ALL.
        if ! printf -v "$_pi_name" '%s' "${_pi_secret_values[_pi_index]}" 2>/dev/null \
            || ! export -- "${_pi_name?}" 2>/dev/null; then
            log_error "${_pi_secret_origins[_pi_index]}: bash could not export $_pi_name; choose another name"
            return 1
        fi
    done

    # A few dynamic variables of bash (EPOCHSECONDS, LINENO, ...) accept an
    # assignment but keep their own value.
    for _pi_index in "${!_pi_secret_names[@]}"; do
        _pi_name=${_pi_secret_names[_pi_index]}
        if [[ ${!_pi_name-} != "${_pi_secret_values[_pi_index]}" ]]; then
            report_unexportable "$_pi_index" "is a variable that bash sets itself, so it cannot be exported unchanged" || return 1
            unset -v "$_pi_name"
        fi
    done
}


_pi_secrets_dir=${PI_SECRETS_DIR:-$DEFAULT_SECRETS_DIR}
if [[ -e $_pi_secrets_dir/manifest || -L $_pi_secrets_dir/manifest ]]; then
    collect_manifest_secrets "$_pi_secrets_dir" || exit "$EXIT_INVALID_SECRETS"
elif [[ -d $_pi_secrets_dir ]]; then
    _pi_severity=warning
    collect_legacy_secrets "$_pi_secrets_dir"
fi
unset -v _pi_secrets_dir

check_shell_variables || exit "$EXIT_INVALID_SECRETS"
run_language_setup || exit "$EXIT_SETUP_FAILED"
export_secrets || exit "$EXIT_INVALID_SECRETS"
unset -v _pi_secret_names _pi_secret_values _pi_secret_origins _pi_severity

if (($# == 0)); then
    set -- pi --mode rpc
fi

# With execfail, a failed exec returns here instead of ending the shell, so
# the failure can be explained. bash has already printed the reason.
shopt -s execfail
# shellcheck disable=SC2093 # execfail makes the lines below reachable
exec "$@"
_pi_exec_status=$?
log_error "could not start $1 (exit status $_pi_exec_status: 127 means not found; 126 means not executable or, with large secrets, an environment over the kernel's size limit)"
exit "$_pi_exec_status"
