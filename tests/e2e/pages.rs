//! The box's pages in a real browser (Debian's chromium through chromedriver): sign in, search
//! by words, see every crop, open a record, name the object, follow "more like this", search by
//! a picture, look at the events and the cameras, all with nothing on the console.

use crate::harness::browser::Browser;
use crate::http::{indexing_bikes, TOKEN};

/// True once every image of the page has loaded and has pixels.
const IMAGES_RENDERED: &str = "return [...document.images].every(i => i.complete && i.naturalWidth > 0)";

#[test]
fn a_browser_signs_in_searches_opens_a_record_names_it_follows_more_like_this_and_sees_the_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, _config, port) = indexing_bikes("pages", dir.path());
    let base = format!("http://127.0.0.1:{port}");
    let browser = Browser::start();

    browser.goto(&format!("{base}/?text=a+person"));
    assert_eq!(browser.location(), "/login?next=%2F%3Ftext%3Da%2Bperson", "a browser without a session signs in first");
    browser.type_into("#token", "not-the-token-at-all");
    browser.click("form.signin button");
    browser.wait_for("the sign-in page to answer", "return document.querySelector('.error') !== null");
    let refused = browser.console();
    assert!(refused.iter().all(|(level, m)| level != "SEVERE" || m.contains("/login") && m.contains("401")), "{refused:?}");
    assert!(browser
        .eval("return document.querySelector('.error').textContent")
        .as_str()
        .is_some_and(|t| t.contains("not the access token")));
    browser.type_into("#token", TOKEN);
    browser.click("form.signin button");
    assert_eq!(browser.wait_until_at("/?"), "/?text=a+person", "back where the browser was going");
    browser.screenshot("search");
    let cards = browser.eval("return document.querySelectorAll('figure.card').length");
    assert_eq!(cards, 20, "the first 20 matches");
    browser.wait_for("every crop to render", IMAGES_RENDERED);

    browser.type_into("form.search input[name=text]", "someone on a bicycle");
    browser.click("form.search button");
    browser.wait_until_at("/?text=someone+on+a+bicycle"); // every search is a URL
    browser.wait_for("every crop to render", IMAGES_RENDERED);
    let first = browser.eval("return document.querySelector('figure.card').dataset.id");
    let first = first.as_str().expect("a record id").to_owned();

    browser.click("figure.card a");
    browser.wait_until_at(&format!("/records/{first}"));
    browser.wait_for("the snapshot and the crop to render", IMAGES_RENDERED);
    let snapshot = browser.eval("const i = document.querySelector('img.snapshot'); return i && i.getAttribute('src')");
    assert_eq!(snapshot, format!("/api/records/{first}/snapshot.jpg?box=1"), "the moment, with the object outlined");
    browser.screenshot("record");
    let details = browser.eval("return document.querySelector('dl').textContent");
    assert!(details.as_str().is_some_and(|d| d.contains("street on pages") && d.contains(&first)), "{details}");

    let hostile = "<img src=x onerror=window.pwned=1> our van";
    browser.type_into("#name", hostile);
    browser.click("form.name button");
    browser.wait_for("the name on the page", "return document.querySelector('h1').textContent.includes('our van')");
    assert_eq!(browser.location(), format!("/records/{first}"), "back on the record");
    let heading = browser
        .eval("return [document.querySelector('h1').textContent, document.querySelectorAll('h1 img').length, window.pwned === undefined]");
    assert_eq!(heading, serde_json::json!([format!("{hostile} · person on street"), 0, true]), "a name is text, never markup");
    browser.screenshot("named");

    browser.click("a.more");
    browser.wait_until_at(&format!("/?like={first}"));
    browser.wait_for("every crop to render", IMAGES_RENDERED);
    let best = browser.eval("return document.querySelector('figure.card .score').textContent");
    assert_eq!(best, "1.000", "the record itself is the best match");

    // Search by picture: the record's own crop, uploaded by the page's script.
    let crop = dir.path().join("crop.jpg");
    std::fs::write(&crop, crate::http::crop_of(port, &first)).expect("write the crop");
    browser.goto(&format!("{base}/"));
    browser.choose_file("input.picture", &crop);
    browser.wait_until_at("/?picture=");
    browser.wait_for("every crop to render", IMAGES_RENDERED);
    let found = browser.eval(
        "return [document.querySelector('p.like').textContent, [...document.querySelectorAll('figure.card')].map(c => c.dataset.id)]",
    );
    assert_eq!(found[0], "Like your picture");
    assert!(found[1].as_array().is_some_and(|ids| ids.iter().any(|i| i == first.as_str())), "the crop finds its record: {found}");
    browser.screenshot("picture");

    browser.click("nav a[href='/events']");
    browser.wait_until_at("/events");
    browser.wait_for("every event's crop to render", IMAGES_RENDERED);
    let events =
        browser.eval("return [document.querySelectorAll('li.event').length, document.querySelector('li.event .label').textContent]");
    assert!(events[0].as_u64().is_some_and(|n| n > 0) && events[1] == "person", "what the camera tracked: {events}");
    browser.screenshot("events");

    browser.click("nav a[href='/cameras']");
    browser.wait_until_at("/cameras");
    let camera =
        browser.eval("const r = document.querySelector('tr[data-camera=street]'); return r && r.querySelector('td.state').textContent");
    assert!(camera.as_str().is_some_and(|s| ["online", "offline", "error"].contains(&s)), "the camera's state: {camera}");
    browser.screenshot("cameras");

    // Since the refused sign-in: the console reads from where the last read stopped.
    let problems: Vec<_> = browser.console();
    assert!(problems.is_empty(), "the console stayed clean: {problems:?}");
}
