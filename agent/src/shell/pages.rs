//! Start-up code handed back to the kernel once the agent runs.
//!
//! A process's resident set counts every page of its program and shared
//! libraries that is mapped, and the kernel maps file pages up to 64 KiB at a
//! time around each one touched ("fault-around"). By the time the agent's
//! loop runs, most of those pages served start-up only: the command line, the
//! config, the state directory, binding sockets. [`release_startup_pages`]
//! tells the kernel (`MADV_DONTNEED`) that the process no longer needs them
//! mapped. What the loop goes on to run is mapped again at its first use,
//! from the page cache (a minor fault, no read from storage).
//!
//! A page is released only if mapping it again gives the same bytes:
//! - it lies wholly inside the file-backed part of a segment the loader maps
//!   without write permission (`PT_LOAD` without `PF_W`, up to `p_filesz`),
//!   of an object without text relocations;
//! - and `/proc/self/pagemap` says it is the file's own page, not a private
//!   copy (a loader's zeroed tail, a debugger's breakpoint, a uprobe);
//!   untouched pages count as the file's. Without a readable pagemap
//!   nothing is released.
//!
//! The segments come from `dl_iterate_phdr`. The vDSO is left alone.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

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

/// What [`release_startup_pages`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Runs of pages handed back (one `madvise` each).
    pub runs: usize,
    /// Resident pages among them, in bytes: what left the resident set.
    pub resident_bytes: usize,
    /// Pages kept because they were private copies, not the file's.
    pub kept_pages: usize,
    /// Why nothing was released, if so (the pagemap could not be read).
    pub refused: Option<&'static str>,
}

/// Releases what start-up left mapped (see the module's documentation).
pub fn release_startup_pages() -> Released {
    let segments = read_only_segments();
    let Ok(pagemap) = File::open("/proc/self/pagemap") else {
        return Released {
            refused: Some("/proc/self/pagemap cannot be read"),
            ..Released::default()
        };
    };
    release(&segments, &pagemap, page_size())
}

/// The whole pages of every read-only, file-backed segment of the program
/// and its libraries (not the vDSO, not objects with text relocations).
fn read_only_segments() -> Vec<Range<usize>> {
    let mut segments: Vec<Range<usize>> = Vec::new();
    // SAFETY: the callback only reads what the loader passes it, and `data`
    // is `segments`, alive for the whole call and used by nothing else.
    unsafe {
        libc::dl_iterate_phdr(Some(each_object), (&raw mut segments).cast::<c_void>());
    }
    segments
}

/// `dl_iterate_phdr`'s callback: adds one object's read-only segments.
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `info` for the call's duration, and
    // `data` is the vector that `read_only_segments` passed.
    let (info, segments) = unsafe { (&*info, &mut *data.cast::<Vec<Range<usize>>>()) };
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
    segments.extend(headers.iter().filter_map(|h| releasable(h, base, page)));
    0
}

/// The whole pages of `header`'s segment that hold only the file's bytes,
/// if it is loaded without write permission: from its start rounded up to
/// the end of its file part (`p_filesz`; beyond, the loader zeroes or maps
/// anonymous memory) rounded down. A page shared with a neighbour stays.
fn releasable(header: &ProgramHeader, base: usize, page: usize) -> Option<Range<usize>> {
    if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
        return None;
    }
    let start = base.checked_add(header.p_vaddr as usize)?;
    let end = start.checked_add(header.p_filesz as usize)?;
    let (start, end) = (start.checked_next_multiple_of(page)?, end / page * page);
    (start < end).then_some(start..end)
}

/// Releases the pages of `segments` that are the file's own or untouched,
/// in runs, as `pagemap` (the process's `/proc/self/pagemap`) tells.
fn release(segments: &[Range<usize>], pagemap: &File, page: usize) -> Released {
    let mut released = Released::default();
    let mut entries = [0u64; 512];
    // The run being gathered: its first page, and its resident bytes.
    let mut run: Option<(usize, usize)> = None;
    let end_run = |run: &mut Option<(usize, usize)>, end: usize, released: &mut Released| {
        if let Some((start, resident)) = run.take() {
            if dont_need(start..end) {
                released.runs += 1;
                released.resident_bytes += resident;
            }
        }
    };
    for segment in segments {
        let mut address = segment.start;
        while address < segment.end {
            let count = ((segment.end - address) / page).min(entries.len());
            if count == 0 || read_entries(pagemap, address / page, &mut entries[..count]).is_none()
            {
                // A part page, or unreadable: the rest of the segment stays.
                break;
            }
            for &entry in &entries[..count] {
                match classify(entry) {
                    Page::Untouched => {
                        run.get_or_insert((address, 0));
                    }
                    Page::File => run.get_or_insert((address, 0)).1 += page,
                    Page::Private => {
                        released.kept_pages += 1;
                        end_run(&mut run, address, &mut released);
                    }
                }
                address += page;
            }
        }
        end_run(&mut run, address, &mut released);
    }
    released
}

/// Reads the pagemap entries of the pages from `first` on.
fn read_entries(pagemap: &File, first: usize, entries: &mut [u64]) -> Option<()> {
    let mut raw = [0u8; 512 * 8];
    let raw = raw.get_mut(..entries.len() * 8)?;
    let offset = u64::try_from(first).ok()?.checked_mul(8)?;
    pagemap.read_exact_at(raw, offset).ok()?;
    for (entry, bytes) in entries.iter_mut().zip(raw.chunks_exact(8)) {
        *entry = u64::from_ne_bytes(bytes.try_into().ok()?);
    }
    Some(())
}

/// What a pagemap entry says of a page of a private file mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// Not mapped and not swapped: nothing to hand back, nothing lost.
    Untouched,
    /// Mapped, and the file's own page (bit 61).
    File,
    /// Mapped or swapped, but anonymous: a private copy, kept.
    Private,
}

fn classify(entry: u64) -> Page {
    let present = entry & (1 << 63) != 0;
    let swapped = entry & (1 << 62) != 0;
    let file = entry & (1 << 61) != 0;
    match (present, swapped, file) {
        (false, false, _) => Page::Untouched,
        (true, false, true) => Page::File,
        _ => Page::Private,
    }
}

/// `MADV_DONTNEED` over `range`; whether the kernel took it.
fn dont_need(range: Range<usize>) -> bool {
    // SAFETY: `range` is whole pages of a read-only, file-backed segment of
    // an object without text relocations, each page untouched or the file's
    // own (`release`): mapped again, they give the same bytes.
    let done = unsafe {
        rustix::mm::madvise(
            range.start as *mut c_void,
            range.end - range.start,
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
    done.is_ok()
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
