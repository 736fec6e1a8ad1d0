"""One benchmark's section of docs/performance.md: the text between its
begin and end markers is replaced, or the section is appended."""


def replace_section(path, begin, end, text):
    try:
        with open(path) as f:
            doc = f.read()
    except OSError:
        doc = "# tact performance\n"
    start, stop = doc.find(begin), doc.find(end)
    if start >= 0 and stop > start:
        doc = doc[:start] + text + doc[stop + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(doc)
    print("wrote", path)
