// hello.cpp - libchinwag from C++: RAII owners for the client and its
// events, a chatos login, one message and its echo.
//
//   hello HOST PORT LOGIN
//
// Build: c++ -std=c++17 hello.cpp $(pkg-config --cflags --libs chinwag) -o hello
#include <chinwag.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

struct ClientFree {
    void operator()(cw_client *c) const { cw_client_free(c); }
};
struct EventFree {
    void operator()(cw_event *e) const { cw_event_free(e); }
};
using Client = std::unique_ptr<cw_client, ClientFree>;
using Event = std::unique_ptr<cw_event, EventFree>;

void check(cw_result r, const char *what)
{
    if (r != CW_OK)
        throw std::runtime_error(std::string(what) + ": " + cw_result_str(r) + ": " + cw_last_error());
}

Client connect(const std::string &host, uint16_t port)
{
    cw_client *c = nullptr;
    check(cw_client_connect(host.c_str(), port, CW_DIALECT_CHATOS, &c), "connect");
    return Client(c);
}

} // namespace

int main(int argc, char **argv)
{
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " HOST PORT LOGIN\n";
        return 2;
    }
    try {
        std::cout << "libchinwag " << cw_version() << " (header " << CW_VERSION_STRING << ")\n";
        Client c = connect(argv[1], static_cast<uint16_t>(std::atoi(argv[2])));
        check(cw_client_login(c.get(), argv[3], 5000), "login");
        const std::string text = "hello from C++";
        check(cw_client_send_message(c.get(), text.c_str()), "send");
        for (;;) {
            cw_event *raw = nullptr;
            check(cw_client_next_event(c.get(), 10000, &raw), "next_event");
            Event ev(raw);
            if (cw_event_kind(ev.get()) == CW_EVENT_MESSAGE && text == cw_event_text(ev.get())) {
                std::cout << "echo from " << cw_event_peer(ev.get()) << ": " << text << "\n";
                break;
            }
        }
        check(cw_client_close(c.get()), "close");
    } catch (const std::exception &e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    return 0;
}
