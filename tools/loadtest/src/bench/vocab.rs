//! The words the seeded catalog is made of, shared by the seeding SQL (passed in
//! as arrays) and by the questions the load asks, so questions find real matches
//! and the builtin responder's search scores, ranks and bounds real candidates.

/// Product categories, each with the nouns its products are named after.
pub const CATEGORIES: &[(&str, &[&str])] = &[
    ("running shoes", &["sneaker", "trainer", "runner", "racer"]),
    ("outdoor gear", &["tent", "backpack", "lantern", "hammock"]),
    ("kitchen", &["kettle", "blender", "toaster", "skillet"]),
    ("electronics", &["headphones", "speaker", "charger", "tablet"]),
    ("fitness", &["dumbbell", "kettlebell", "treadmill", "skipping rope"]),
    ("kids", &["stroller", "puzzle", "scooter", "crayons"]),
    ("home", &["lamp", "pillow", "blanket", "curtain"]),
    ("beauty", &["lotion", "perfume", "shampoo", "serum"]),
];

pub const ADJECTIVES: &[&str] = &[
    "classic", "urban", "trail", "compact", "deluxe", "eco", "pro", "lite", "rugged", "smart", "vintage",
    "sport", "premium", "travel", "family", "studio", "swift", "cosy", "bold", "silent", "solar", "royal",
    "nordic", "coastal", "summit",
];

pub const MATERIALS: &[&str] =
    &["cotton", "steel", "bamboo", "leather", "recycled plastic", "aluminium", "wool", "ceramic", "canvas"];

pub const USES: &[&str] = &[
    "everyday use",
    "long weekends",
    "small apartments",
    "busy mornings",
    "the gym",
    "camping trips",
    "the office",
    "gifts",
    "rainy days",
    "travel",
];

pub const SERVICES: &[&str] = &[
    "gait analysis",
    "bike tune-up",
    "screen repair",
    "gift wrapping",
    "personal training",
    "installation",
    "fitting session",
    "cooking class",
    "tailoring",
    "engraving",
    "laptop cleaning",
    "phone unlock",
    "tent rental",
    "massage",
    "haircut",
    "manicure",
    "facial",
    "consultation",
    "furniture assembly",
    "data recovery",
    "battery replacement",
    "shoe cleaning",
    "key cutting",
    "photo printing",
    "knife sharpening",
];

pub const SERVICE_LEVELS: &[&str] = &["express", "standard"];

/// FAQ entries: title, content, and a question a customer asks about it.
pub const FAQ: &[(&str, &str, &str)] = &[
    (
        "Opening hours",
        "We are open Monday to Saturday 9am to 7pm and Sunday 10am to 4pm.",
        "What are your opening hours on Sunday?",
    ),
    (
        "Delivery areas",
        "We deliver across Nairobi within 24 hours and countrywide within 3 days.",
        "Which delivery areas do you cover?",
    ),
    (
        "Returns policy",
        "Unused items can be returned within 14 days with the receipt.",
        "What is your returns policy?",
    ),
    (
        "Payment methods",
        "We accept M-Pesa, Visa, Mastercard and cash on delivery.",
        "Which payment methods do you accept?",
    ),
    (
        "Warranty",
        "Electronics carry a 12 month warranty, other items 6 months.",
        "Is there a warranty on electronics?",
    ),
    (
        "Store location",
        "Our store is on Moi Avenue, next to the central bus station.",
        "Where is your store location?",
    ),
    (
        "Parking",
        "Free customer parking is available behind the store for two hours.",
        "Is there parking at the store?",
    ),
    (
        "Gift cards",
        "Gift cards are sold in store and online from 500 up to 50,000.",
        "Do you sell gift cards?",
    ),
    (
        "Loyalty points",
        "Every 100 spent earns one loyalty point; 100 points give a 500 voucher.",
        "How do loyalty points work?",
    ),
    (
        "Order tracking",
        "Track your order with the link in your confirmation SMS.",
        "How can I do order tracking?",
    ),
    (
        "Order cancellation",
        "Orders can be cancelled free of charge until they are dispatched.",
        "What about order cancellation?",
    ),
    (
        "Price match",
        "We match the price of any local shop for the same item in stock.",
        "Do you offer a price match?",
    ),
    ("Student discount", "Students get 10% off with a valid student ID.", "Is there a student discount?"),
    (
        "Size guide",
        "Our size guide lists EU, UK and US sizes for every shoe and garment.",
        "Where is the size guide?",
    ),
    (
        "Shipping abroad",
        "We ship abroad to Uganda, Tanzania and Rwanda within 7 days.",
        "Do you do shipping abroad to Uganda?",
    ),
    ("Bulk orders", "Bulk orders of 20 items or more get a 15% discount.", "Any discount on bulk orders?"),
    (
        "Exchange policy",
        "Items can be exchanged for another size or colour within 30 days.",
        "What is your exchange policy?",
    ),
    (
        "Contact phone",
        "Call or WhatsApp us on 0700 000 000 between 8am and 8pm.",
        "What is your contact phone number?",
    ),
    (
        "Installment plans",
        "Purchases over 10,000 can be paid in three monthly installment plans.",
        "Do you have installment plans?",
    ),
    (
        "Data privacy",
        "We only use your data to process orders and never sell it.",
        "How do you handle data privacy?",
    ),
];

pub const CUSTOMER_NAMES: &[&str] = &[
    "Amina", "Brian", "Wanjiru", "Otieno", "Fatuma", "Kevin", "Achieng", "Mwangi", "Zawadi", "Juma", "Nia",
    "Baraka",
];

/// The channels seeded conversations (and so the load) are spread over.
pub const CHANNELS: &[&str] = &["whatsapp", "web", "sms", "telegram"];

/// Every product noun with its category, in the order the seeding SQL indexes them.
pub fn nouns() -> Vec<(&'static str, &'static str)> {
    CATEGORIES.iter().flat_map(|(category, nouns)| nouns.iter().map(move |n| (*n, *category))).collect()
}

/// `&[&str]` as owned strings, for binding as a PostgreSQL `text[]`.
pub fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}
