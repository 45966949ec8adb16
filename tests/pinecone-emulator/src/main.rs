//! `pinecone-emulator PORT API_KEY DIMENSION`: serves the emulator on 127.0.0.1:PORT until
//! interrupted, for soak scripts and manual runs.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pinecone-emulator PORT API_KEY DIMENSION";
    let (Some(port), Some(key), Some(dimension)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(port), Ok(dimension)) = (port.parse::<u16>(), dimension.parse::<usize>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let emulator = pinecone_emulator::Emulator::start_on(port, key, dimension);
    println!("{}", emulator.url);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
}
