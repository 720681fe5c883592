//! Start-up code handed back to the kernel once the agent runs.
//!
//! A process's resident set counts every page of its program and shared
//! libraries that is mapped, and the kernel maps file pages up to 64 KiB at a
//! time around each one touched ("fault-around"). By the time the agent's
//! loop runs, most of those pages served start-up only: the command line, the
//! config, the state directory, binding sockets. [`release_startup_pages`]
//! tells the kernel (`MADV_DONTNEED`) that the process no longer needs the
//! read-only segments of its program and libraries mapped. What the loop goes
//! on to run is mapped again at its first use, from the page cache (a minor
//! fault, no read from storage).
//!
//! Only segments the loader maps without write permission are released, and
//! only from objects without text relocations: their pages hold exactly the
//! file's bytes, so mapping them again gives the same code and constants. The
//! list comes from `dl_iterate_phdr`, which holds the loader's lock, so no
//! library is loaded or unloaded while it is walked. The vDSO is left alone.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};

#[cfg(target_pointer_width = "64")]
type ProgramHeader = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type ProgramHeader = libc::Elf32_Phdr;

/// One entry of an object's dynamic section (`ElfN_Dyn`: a signed tag and a
/// word, each as wide as a pointer).
#[repr(C)]
struct DynamicEntry {
    tag: isize,
    value: usize,
}

/// What [`release_startup_pages`] handed back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Segments released.
    pub segments: usize,
    /// Their bytes, whole pages only (resident or not).
    pub bytes: usize,
}

/// Releases the read-only segments of the program and its libraries (see the
/// module's documentation). Segments the kernel refuses are skipped.
pub fn release_startup_pages() -> Released {
    let mut released = Released::default();
    // SAFETY: the callback only reads the program headers the loader passes
    // it, and `data` is the `Released` above, alive for the whole call.
    unsafe {
        libc::dl_iterate_phdr(Some(each_object), (&raw mut released).cast::<c_void>());
    }
    released
}

/// `dl_iterate_phdr`'s callback: releases one object's read-only segments.
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `info` for the call's duration, and
    // `data` is the `Released` that `release_startup_pages` passed.
    let (info, released) = unsafe { (&*info, &mut *data.cast::<Released>()) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let base = info.dlpi_addr as usize;
    // SAFETY: `getauxval` only reads the auxiliary vector.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    let first = headers
        .iter()
        .find(|h| h.p_type == libc::PT_LOAD)
        .map(|h| base.wrapping_add(h.p_vaddr as usize));
    if vdso != 0 && first == Some(vdso) {
        return 0;
    }
    // SAFETY: as above; the dynamic section is mapped with the object.
    if unsafe { has_text_relocations(base, headers) } {
        return 0;
    }
    let page = page_size();
    for header in headers {
        if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = base.wrapping_add(header.p_vaddr as usize);
        let end = start.saturating_add(header.p_memsz as usize);
        // Whole pages inside the segment only: a page it shares with a
        // neighbour (written, perhaps) stays as it is.
        let (start, end) = (start.next_multiple_of(page), end / page * page);
        if end <= start {
            continue;
        }
        // SAFETY: the range is whole pages of a segment mapped without write
        // permission from an object without text relocations: dropping them
        // loses nothing, they are mapped again from the file when used.
        let done = unsafe {
            rustix::mm::madvise(
                start as *mut c_void,
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
        if done.is_ok() {
            released.segments += 1;
            released.bytes += end - start;
        }
    }
    0
}

/// Whether the object's dynamic section asks for text relocations (its code
/// pages were written by the loader, so they must not be dropped).
///
/// # Safety
/// `base` and `headers` must be an object's as the loader reported them.
unsafe fn has_text_relocations(base: usize, headers: &[ProgramHeader]) -> bool {
    const DT_TEXTREL: isize = 22;
    const DT_FLAGS: isize = 30;
    const DF_TEXTREL: usize = 4;
    let Some(dynamic) = headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC) else {
        return false;
    };
    let mut entry = base.wrapping_add(dynamic.p_vaddr as usize) as *const DynamicEntry;
    // Bounded by the section's size as well as by its DT_NULL.
    let count = dynamic.p_memsz as usize / std::mem::size_of::<DynamicEntry>();
    for _ in 0..count {
        // SAFETY: within the dynamic section, which the loader mapped.
        let (tag, value) = unsafe { ((*entry).tag, (*entry).value) };
        match tag {
            0 => return false,
            DT_TEXTREL => return true,
            DT_FLAGS if value & DF_TEXTREL != 0 => return true,
            _ => {}
        }
        entry = entry.wrapping_add(1);
    }
    false
}

fn page_size() -> usize {
    rustix::param::page_size()
}

#[cfg(test)]
mod tests;
