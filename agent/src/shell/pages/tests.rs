//! Tests of releasing the start-up pages: which ranges, which pages, and
//! that what comes back is what was there.

use super::*;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use std::io::Write;

const PAGE: usize = 4096;

fn resident_file_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssFile:"))
        .expect("RssFile");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// A hash of the bytes now mapped at `ranges`.
fn digest(ranges: &[Range<usize>]) -> u64 {
    let mut sum = 17u64;
    for range in ranges {
        // SAFETY: the ranges are mapped and readable (the loader's segments,
        // or the test's own mapping), for as long as the process runs.
        let bytes = unsafe {
            std::slice::from_raw_parts(range.start as *const u8, range.end - range.start)
        };
        sum = bytes.iter().fold(sum, |s, &b| {
            s.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(b))
        });
    }
    sum
}

fn pagemap() -> File {
    File::open("/proc/self/pagemap").expect("the pagemap is readable")
}

#[test]
fn the_program_and_its_libraries_come_back_byte_for_byte() {
    let segments = read_only_segments();
    // The test program's own code and constants, and libc's at least.
    assert!(segments.len() >= 4, "{segments:?}");
    let before = digest(&segments);
    let resident_before = resident_file_kb();
    let released = release(&segments, &pagemap(), page_size());
    let resident_after = resident_file_kb();
    assert!(released.runs >= segments.len(), "{released:?}");
    assert!(released.resident_bytes >= 256 * 1024, "{released:?}");
    assert_eq!(released.refused, None);
    // Reading every released page maps it again: from the file, unchanged.
    assert_eq!(digest(&segments), before, "the released pages changed");
    // Other tests run meanwhile and map back what they use, but far from
    // everything start-up and the harness had mapped.
    assert!(
        resident_after < resident_before,
        "RssFile {resident_before} kB before, {resident_after} kB after"
    );
}

#[test]
fn a_private_copy_is_kept_and_the_files_pages_around_it_are_released() {
    let dir = std::env::temp_dir().join(format!("shoal-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("file");
    let mut file = File::create(&path).expect("create");
    for k in 0..4u8 {
        file.write_all(&[b'a' + k; PAGE]).expect("write");
    }
    drop(file);
    let file = File::open(&path).expect("open");
    // The open file keeps its pages; nothing is left behind in /tmp.
    std::fs::remove_dir_all(&dir).expect("remove the temp dir");
    let page = page_size();
    let length = 4 * PAGE;
    // SAFETY: a fresh private mapping of the test's own file, unmapped below.
    let start = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            length,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
            &file,
            0,
        )
    }
    .expect("mmap") as usize;
    // Page 1 becomes a private copy (as a loader's zeroed tail or a
    // debugger's breakpoint would); pages 0 and 2 are read, 3 never touched.
    // SAFETY: within the mapping, which is writable until the mprotect.
    unsafe {
        *((start + PAGE) as *mut u8) = b'!';
        assert_eq!(*(start as *const u8), b'a');
        assert_eq!(*((start + 2 * PAGE) as *const u8), b'c');
        rustix::mm::mprotect(start as *mut c_void, length, MprotectFlags::READ).expect("mprotect");
    }
    assert_eq!(page, PAGE, "the test assumes 4 KiB pages");
    let segment = start..start + length;
    let released = release(std::slice::from_ref(&segment), &pagemap(), page);
    assert_eq!(released.kept_pages, 1, "{released:?}");
    assert_eq!(released.runs, 2, "{released:?}");
    // Pages 0 and 2 were resident and the file's; page 3 too if the
    // kernel's fault-around mapped it with them.
    assert!(
        (2 * PAGE..=3 * PAGE).contains(&released.resident_bytes),
        "{released:?}"
    );
    // SAFETY: still mapped; reading maps released pages again.
    let firsts: Vec<u8> = (0..4)
        .map(|k| unsafe { *((start + k * PAGE) as *const u8) })
        .collect();
    assert_eq!(
        firsts, b"a!cd",
        "the private copy survives, the rest is the file's"
    );
    // SAFETY: the mapping made above, no longer used.
    unsafe { rustix::mm::munmap(start as *mut c_void, length) }.expect("munmap");
    let _ = std::fs::remove_dir_all(&dir);
}

fn header(p_type: u32, p_flags: u32, vaddr: usize, filesz: usize, memsz: usize) -> ProgramHeader {
    ProgramHeader {
        p_type,
        p_flags,
        p_offset: 0,
        p_vaddr: vaddr as _,
        p_paddr: 0,
        p_filesz: filesz as _,
        p_memsz: memsz as _,
        p_align: 0,
    }
}

#[test]
fn only_whole_pages_of_a_read_only_segments_file_part_are_releasable() {
    let (load, dynamic) = (libc::PT_LOAD, libc::PT_DYNAMIC);
    let (read, exec, write) = (libc::PF_R, libc::PF_X, libc::PF_W);
    let base = 0x10_0000;
    let cases = [
        // Aligned code: all of it.
        (
            header(load, read | exec, 0x1000, 0x3000, 0x3000),
            Some(0x1000..0x4000),
        ),
        // Unaligned at both ends: the whole pages inside.
        (
            header(load, read, 0x1800, 0x3000, 0x3000),
            Some(0x2000..0x4000),
        ),
        // A zero-filled tail past the file's part is not the file's.
        (
            header(load, read, 0x1000, 0x2800, 0x5000),
            Some(0x1000..0x3000),
        ),
        // Writable, not loaded, or less than a page: nothing.
        (header(load, read | write, 0x1000, 0x3000, 0x3000), None),
        (header(dynamic, read, 0x1000, 0x3000, 0x3000), None),
        (header(load, read, 0x1200, 0xc00, 0xc00), None),
        (header(load, read, 0x1200, 0x1000, 0x1000), None),
    ];
    for (h, expected) in cases {
        let expected = expected.map(|r: Range<usize>| base + r.start..base + r.end);
        assert_eq!(
            releasable(&h, base, PAGE),
            expected,
            "vaddr {:#x}",
            h.p_vaddr
        );
    }
    // Addresses that overflow are no range at all.
    let huge = header(load, read, usize::MAX - 0x800, 0x1000, 0x1000);
    assert_eq!(releasable(&huge, 0x1000, PAGE), None);
}

#[test]
fn a_pagemap_entry_says_which_pages_are_the_files() {
    let present = 1u64 << 63;
    let swapped = 1u64 << 62;
    let file = 1u64 << 61;
    assert_eq!(classify(0), Page::Untouched);
    assert_eq!(classify(present | file | 0x1234), Page::File);
    assert_eq!(classify(present | 0x1234), Page::Private);
    assert_eq!(classify(swapped | 0x55), Page::Private);
    assert_eq!(classify(swapped | file), Page::Private);
}

fn headers_for(entries: &[DynamicEntry]) -> [ProgramHeader; 2] {
    // Base 0: the section's "address" is where the test's array lives.
    [
        header(libc::PT_LOAD, libc::PF_R, 0, 0, 0),
        header(
            libc::PT_DYNAMIC,
            libc::PF_R,
            entries.as_ptr() as usize,
            std::mem::size_of_val(entries),
            std::mem::size_of_val(entries),
        ),
    ]
}

#[test]
fn objects_with_text_relocations_are_recognised() {
    let entry = |tag: isize, value: usize| DynamicEntry { tag, value };
    let plain = [entry(1, 5), entry(30, 8), entry(0, 0)];
    let textrel = [entry(1, 5), entry(22, 0), entry(0, 0)];
    let flagged = [entry(30, 8 | 4), entry(0, 0)];
    // Past DT_NULL nothing counts; without DT_NULL the size bounds it.
    let after_null = [entry(0, 0), entry(22, 0)];
    let unterminated = [entry(1, 5), entry(2, 6)];
    for (entries, expected) in [
        (&plain[..], false),
        (&textrel[..], true),
        (&flagged[..], true),
        (&after_null[..], false),
        (&unterminated[..], false),
    ] {
        let headers = headers_for(entries);
        // SAFETY: the headers describe the array above, at base 0.
        let found = unsafe { has_text_relocations(0, &headers) };
        let tags: Vec<_> = entries.iter().map(|e| (e.tag, e.value)).collect();
        assert_eq!(found, expected, "{tags:?}");
    }
    // No dynamic section (a static program): nothing to find.
    let headers = headers_for(&plain);
    assert!(!unsafe { has_text_relocations(0, &headers[..1]) });
}
