//! Tests of releasing the start-up pages and of reading a dynamic section.

use super::*;

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

#[inline(never)]
fn checksum(words: &[&str]) -> u64 {
    words
        .iter()
        .flat_map(|w| w.bytes())
        .fold(17, |sum, b| sum.wrapping_mul(31).wrapping_add(u64::from(b)))
}

#[test]
fn released_pages_come_back_unchanged_and_the_resident_set_shrinks() {
    const WORDS: [&str; 3] = ["start-up", "pages", "handed back"];
    let before_sum = checksum(&WORDS);
    let before = resident_file_kb();
    let released = release_startup_pages();
    let after = resident_file_kb();
    // The test program's own code and constants at least.
    assert!(released.segments >= 2, "{released:?}");
    assert!(released.bytes >= 64 * 1024, "{released:?}");
    // Other tests run meanwhile and map back what they use, but far from
    // everything start-up and the harness had mapped.
    assert!(
        after < before,
        "RssFile {before} kB before, {after} kB after"
    );
    // Code and constants read after the release are the file's.
    assert_eq!(checksum(&WORDS), before_sum);
}

fn headers_for(entries: &[DynamicEntry]) -> [ProgramHeader; 2] {
    let header = |p_type, p_vaddr: usize, p_memsz: usize| ProgramHeader {
        p_type,
        p_flags: 0,
        p_offset: 0,
        p_vaddr: p_vaddr as _,
        p_paddr: 0,
        p_filesz: 0,
        p_memsz: p_memsz as _,
        p_align: 0,
    };
    // Base 0: the section's "address" is where the test's array lives.
    [
        header(libc::PT_LOAD, 0, 0),
        header(
            libc::PT_DYNAMIC,
            entries.as_ptr() as usize,
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
        assert_eq!(
            found,
            expected,
            "{:?}",
            entries.iter().map(|e| (e.tag, e.value)).collect::<Vec<_>>()
        );
    }
    // No dynamic section (a static program): nothing to find.
    let headers = headers_for(&plain);
    assert!(!unsafe { has_text_relocations(0, &headers[..1]) });
}
