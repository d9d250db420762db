/* SPDX-License-Identifier: MIT */
/*
 * Symbolizer: names the return addresses of a recorded backtrace for leak
 * and checked-mode reports, as "function+0xoff at file.c:line (object)".
 * With libdw (elfutils; meson feature 'libdw', on when found) names and
 * lines come from the symbol tables and DWARF of every object mapped in the
 * process, static functions included. Without it, or for a frame libdw
 * cannot place, the line is dladdr's: exported symbols only, in
 * backtrace_symbols' "object(function+0xoff) [address]" form.
 * The libdw session is the process's, read at the first report and read
 * again when an address lies in no object it knows (dlopen()ed since).
 * Layer: base (libc and libdw only).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#include <pthread.h>

/* One session per process, opened at the first report and kept: opening
 * one reads every mapped object's tables, too slow for checked mode's
 * report per misuse. Each report holds the lock from open to close. */
static pthread_mutex_t sy_lock = PTHREAD_MUTEX_INITIALIZER;

#if NBUF_HAVE_LIBDW
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>

/* Names found, by address: reports repeat the same few sites, and libdw
 * looks a symbol up by a scan of the object's table. */
#define NAMES 512
#define NAME_LEN 240

struct named {
    uintptr_t pc;
    char name[NAME_LEN];
};

struct nbuf_symbolizer {
    Dwfl *dwfl;
    pid_t pid;           /* whose maps it read: a forked child reads its own */
    int refreshed;       /* the maps were read again during this report */
    struct named *names; /* NAMES slots, emptied when the maps are read */
};
static struct nbuf_symbolizer session; /* sy_lock */

/* Separate debug info by build-id only (/usr/lib/debug/.build-id, where
 * Debian's -dbgsym packages put it). Not dwfl_standard_find_debuginfo:
 * libdw 0.188 then dlopen()s libdebuginfod (and libcurl with it) and may
 * fetch over the network, which a report from inside a server must not. */
static int
find_debuginfo_local(Dwfl_Module *mod, void **userdata, const char *modname, Dwarf_Addr base,
                     const char *file_name, const char *debuglink_file, GElf_Word debuglink_crc,
                     char **debuginfo_file_name)
{
    return dwfl_build_id_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file,
                                        debuglink_crc, debuginfo_file_name);
}

static const Dwfl_Callbacks proc_callbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = find_debuginfo_local,
};

/* (Re)read the process's mappings; 0 when libdw has them. */
static int
session_report(struct nbuf_symbolizer *sy)
{
    if (!sy->names)
        sy->names = malloc(NAMES * sizeof(*sy->names));
    if (sy->names)
        memset(sy->names, 0, NAMES * sizeof(*sy->names));
    if (!sy->dwfl || getpid() != sy->pid) {
        if (sy->dwfl)
            dwfl_end(sy->dwfl);
        sy->pid = getpid();
        sy->dwfl = dwfl_begin(&proc_callbacks);
        if (!sy->dwfl)
            return -1;
    } else {
        dwfl_report_begin_add(sy->dwfl);
    }
    if (dwfl_linux_proc_report(sy->dwfl, sy->pid) != 0 ||
        dwfl_report_end(sy->dwfl, NULL, NULL) != 0) {
        dwfl_end(sy->dwfl);
        sy->dwfl = NULL;
        return -1;
    }
    return 0;
}

struct nbuf_symbolizer *
nbuf_symbolizer_open_(void)
{
    pthread_mutex_lock(&sy_lock);
    session.refreshed = 0;
    if ((!session.dwfl || getpid() != session.pid) && session_report(&session) != 0) {
        pthread_mutex_unlock(&sy_lock);
        return NULL;
    }
    return &session;
}

void
nbuf_symbolizer_close_(struct nbuf_symbolizer *sy)
{
    if (sy)
        pthread_mutex_unlock(&sy_lock);
}

static Dwfl_Module *
module_of(struct nbuf_symbolizer *sy, Dwarf_Addr at)
{
    Dwfl_Module *mod = dwfl_addrmodule(sy->dwfl, at);
    /* Not mapped when the maps were read: dlopen()ed since. Once a report. */
    if (!mod && !sy->refreshed) {
        sy->refreshed = 1;
        if (session_report(sy) == 0)
            mod = dwfl_addrmodule(sy->dwfl, at);
    }
    return mod;
}

/* The line of @at from the unit that covers it, found by walking the
 * units: libdw's lookup needs .debug_aranges, which clang does not emit
 * unless asked (-gdwarf-aranges). */
static const char *
line_by_cu_scan(Dwfl_Module *mod, Dwarf_Addr at, int *line)
{
    Dwarf_Addr bias;
    Dwarf_Die *cu = NULL;
    while ((cu = dwfl_module_nextcu(mod, cu, &bias))) {
        if (dwarf_haspc(cu, at - bias) != 1)
            continue;
        Dwarf_Line *l = dwarf_getsrc_die(cu, at - bias);
        if (!l || dwarf_lineno(l, line) != 0)
            return NULL;
        return dwarf_linesrc(l, NULL, NULL);
    }
    return NULL;
}

/* Name and line from libdw; 0 when it cannot place the address. */
static int
libdw_lookup(struct nbuf_symbolizer *sy, uintptr_t pc, char *out, size_t len)
{
    /* A return address is just past its call: look up the call itself. */
    Dwarf_Addr at = pc - 1;
    Dwfl_Module *mod = sy && sy->dwfl ? module_of(sy, at) : NULL;
    if (!mod)
        return 0;
    GElf_Sym sym;
    GElf_Off off = 0;
    const char *name = dwfl_module_addrinfo(mod, at, &off, &sym, NULL, NULL, NULL);
    const char *object = NULL;
    dwfl_module_info(mod, NULL, NULL, NULL, NULL, NULL, &object, NULL);
    const char *file = NULL;
    int line = 0;
    Dwfl_Line *l = dwfl_module_getsrc(mod, at);
    if (l)
        file = dwfl_lineinfo(l, NULL, &line, NULL, NULL, NULL);
    else
        file = line_by_cu_scan(mod, at, &line);
    if (!name && !file)
        return 0;
    if (object && strrchr(object, '/'))
        object = strrchr(object, '/') + 1;
    int n = snprintf(out, len, "%s+0x%llx", name ? name : "??", (unsigned long long)off + 1);
    if (n > 0 && (size_t)n < len && file) {
        const char *base = strrchr(file, '/');
        n += snprintf(out + n, len - (size_t)n, " at %s:%d", base ? base + 1 : file, line);
    }
    if (n > 0 && (size_t)n < len && object)
        snprintf(out + n, len - (size_t)n, " (%s)", object);
    return 1;
}
static int
libdw_name(struct nbuf_symbolizer *sy, uintptr_t pc, char *out, size_t len)
{
    struct named *slot = sy && sy->names ? &sy->names[(pc >> 2) % NAMES] : NULL;
    if (slot && slot->pc == pc) {
        snprintf(out, len, "%s", slot->name);
        return 1;
    }
    if (!libdw_lookup(sy, pc, out, len))
        return 0;
    if (slot && strlen(out) < NAME_LEN) {
        slot->pc = pc;
        memcpy(slot->name, out, strlen(out) + 1);
    }
    return 1;
}
#else
struct nbuf_symbolizer *
nbuf_symbolizer_open_(void)
{
    return NULL;
}

void
nbuf_symbolizer_close_(struct nbuf_symbolizer *sy)
{
    (void)sy;
}

static int
libdw_name(struct nbuf_symbolizer *sy, uintptr_t pc, char *out, size_t len)
{
    (void)sy, (void)pc, (void)out, (void)len;
    return 0;
}
#endif

void
nbuf_symbolize_(struct nbuf_symbolizer *sy, const void *pc, char *out, size_t len)
{
    if (!len)
        return;
    if (libdw_name(sy, (uintptr_t)pc, out, len))
        return;
    Dl_info info;
    if (dladdr(pc, &info) && info.dli_fname) {
        uintptr_t base = (uintptr_t)(info.dli_sname ? info.dli_saddr : info.dli_fbase);
        snprintf(out, len, "%s(%s+0x%llx) [%p]", info.dli_fname,
                 info.dli_sname ? info.dli_sname : "", (unsigned long long)((uintptr_t)pc - base),
                 pc);
        return;
    }
    snprintf(out, len, "[%p]", pc);
}

/* Fork: the child's only thread may report; no report may hold the lock. */
void
nbuf_symbolize_fork_prepare_(void)
{
    pthread_mutex_lock(&sy_lock);
}

void
nbuf_symbolize_fork_release_(void)
{
    pthread_mutex_unlock(&sy_lock);
}
